import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, open, rename, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Client } from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import {
  compactDate,
  DigestStream,
  formatQualifiedName,
  MANIFEST_FILE,
  type ManifestTable,
  quoteIdent,
  quoteQualified,
  serverIdentity,
  type SnapshotManifest,
  snapshotDirName,
} from '@app/common';
import { listSourceTables, readOwnedSequences, type SourceTable } from './table-catalog';

export interface SnapshotRequest {
  date: string;
  sourceDatabaseUrl: string;
  snapshotDir: string;
  tables: { schema: string; name: string }[];
  excludeTables: { schema: string; name: string }[];
}

export interface WrittenSnapshot {
  manifest: SnapshotManifest;
  location: string;
}

const WRITE_BUFFER = 1 << 20;

export function newSnapshotId(date: string): string {
  return `${compactDate(date)}-${randomBytes(4).toString('hex')}`;
}

/** A file name that says which table it holds but can never contain a path separator. */
function fileNameFor(index: number, table: SourceTable): string {
  const safe = (s: string) => s.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 60);
  return `${String(index + 1).padStart(4, '0')}_${safe(table.schema)}.${safe(table.name)}.csv`;
}

async function fsyncPath(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Streams one table through COPY TO into a file, hashing in the same pass; memory stays flat.
 * Partitioned tables are read through a query because COPY cannot read them directly.
 */
async function dumpTable(client: Client, table: SourceTable, path: string): Promise<{ rows: number; bytes: number; sha256: string }> {
  const columns = table.columns.map(quoteIdent).join(', ');
  const source = table.partitioned ? `(SELECT ${columns} FROM ${quoteQualified(table)})` : `${quoteQualified(table)} (${columns})`;
  const copy = client.query(copyTo(`COPY ${source} TO STDOUT (FORMAT csv, HEADER)`));
  const digest = new DigestStream();
  await pipeline(copy, digest, createWriteStream(path, { highWaterMark: WRITE_BUFFER }));
  await fsyncPath(path);
  return { rows: copy.rowCount, bytes: digest.bytes, sha256: digest.sha256 };
}

/**
 * Writes a complete snapshot: every table read inside one REPEATABLE READ READ ONLY transaction
 * (one consistent point in time), into a temporary directory that is renamed into place only when
 * every file and the manifest are on disk. A published snapshot is never modified afterwards.
 */
export async function writeSnapshot(request: SnapshotRequest): Promise<WrittenSnapshot> {
  const snapshotId = newSnapshotId(request.date);
  // Absolute, so a relative SNAPSHOT_DIR still gives loaders a location they can resolve.
  const finalDir = resolve(request.snapshotDir, snapshotDirName(snapshotId));
  const workDir = resolve(request.snapshotDir, `.tmp-${snapshotDirName(snapshotId)}`);
  const client = new Client({ connectionString: request.sourceDatabaseUrl, application_name: 'db-fanout-dumper' });
  // Without a listener, a connection dropped while idle would crash the process.
  client.on('error', () => undefined);
  await mkdir(workDir, { recursive: true });
  try {
    await client.connect();
    const source = await serverIdentity(client);
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const tables = await listSourceTables(client, request.tables, request.excludeTables);
    const manifestTables: ManifestTable[] = [];
    for (const [index, table] of tables.entries()) {
      const file = fileNameFor(index, table);
      const written = await dumpTable(client, table, join(workDir, file));
      manifestTables.push({ name: formatQualifiedName(table), schema: table.schema, table: table.name, file, columns: table.columns, ...written });
    }
    const sequences = await readOwnedSequences(client, tables);
    await client.query('COMMIT');

    const manifest: SnapshotManifest = {
      formatVersion: 1,
      snapshotId,
      source,
      date: request.date,
      createdAt: new Date().toISOString(),
      tables: manifestTables,
      sequences,
    };
    const manifestPath = join(workDir, MANIFEST_FILE);
    await writeFile(manifestPath, `${JSON.stringify(manifest, null, 2)}\n`);
    await fsyncPath(manifestPath);
    await rename(workDir, finalDir);
    await fsyncPath(request.snapshotDir);
    return { manifest, location: finalDir };
  } catch (error) {
    await rm(workDir, { recursive: true, force: true });
    throw error;
  } finally {
    await client.end().catch(() => undefined);
  }
}
