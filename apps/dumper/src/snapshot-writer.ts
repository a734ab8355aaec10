import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, open, rename, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Client } from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import { compactDate, MANIFEST_FILE, type ManifestTable, type SnapshotManifest, snapshotDirName } from '@app/common/contract';
import { formatQualifiedName, quoteIdent, quoteQualified, serverIdentity } from '@app/common/database';
import { PhaseTimer, ProgressMeter } from '@app/common/observability';
import { DigestStream } from '@app/common/streams';
import type { RulesFile } from '@app/common/rules';
import { DumpRules } from './rules/dump-rules';
import { listSourceTables, readOwnedSequences, type SourceTable } from './table-catalog';

export interface SnapshotRequest {
  date: string;
  sourceDatabaseUrl: string;
  snapshotDir: string;
  tables: { schema: string; name: string }[];
  excludeTables: { schema: string; name: string }[];
  /** Connections dumping tables at once (default 1), all reading one exported snapshot. */
  jobs?: number;
  /** DUMP_RULES: masking, the strict gate and subsetting, applied in production's own COPY query. */
  rules?: RulesFile;
  /** MASKING_KEY, for keyed strategies; never logged, never in the manifest (its id is). */
  maskingKey?: string;
  log?: (line: string) => void;
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
async function dumpTable(client: Client, table: SourceTable, path: string, progress: ProgressMeter, rules?: DumpRules): Promise<{ rows: number; bytes: number; sha256: string }> {
  const columns = table.columns.map(quoteIdent).join(', ');
  const plain = table.partitioned ? `(SELECT ${columns} FROM ${quoteQualified(table)})` : `${quoteQualified(table)} (${columns})`;
  // With DUMP_RULES the values are masked by the source's own query: originals never leave it.
  const source = rules ? `(${rules.selectSql(table)})` : plain;
  const copy = client.query(copyTo(`COPY ${source} TO STDOUT (FORMAT csv, HEADER)`));
  const digest = new DigestStream(undefined, (bytes) => progress.add(bytes));
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
  const clients: Client[] = [];
  const open = async () => {
    const client = new Client({
      connectionString: request.sourceDatabaseUrl,
      application_name: 'db-fanout-dumper',
      // A dead peer or a half-open connection must surface as an error (transient, retried), not a hang.
      keepAlive: true,
      connectionTimeoutMillis: 30_000,
    });
    // Without a listener, a connection dropped while idle would crash the process.
    client.on('error', () => undefined);
    clients.push(client);
    await client.connect();
    return client;
  };
  const phases = new PhaseTimer();
  await mkdir(workDir, { recursive: true });
  try {
    const main = await open();
    const source = await serverIdentity(main);
    await main.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    // Waiting behind a lock in production is bounded: lock_not_available is retried as transient.
    await main.query("SET LOCAL lock_timeout = '60s'");
    const tables = await listSourceTables(main, request.tables, request.excludeTables);
    // Like pg_dump: hold ACCESS SHARE on every table for the whole dump, so a TRUNCATE or DROP in
    // production (which ignore MVCC snapshots) cannot make a table look empty halfway through.
    await main.query(`LOCK TABLE ${tables.map((t) => quoteQualified(t)).join(', ')} IN ACCESS SHARE MODE`);
    // The strict gate and every other refusal happen here, before any file is written.
    const rules = request.rules ? await DumpRules.prepare(main, request.rules, request.maskingKey, tables) : undefined;
    await rules?.prepareSession(main);
    const files = new Map(tables.map((table, index) => [table, fileNameFor(index, table)]));

    // Extra connections adopt the main transaction's snapshot: every table is read at one instant.
    const jobs = Math.max(1, Math.min(request.jobs ?? 1, tables.length));
    const workers = [main];
    if (jobs > 1) {
      const { rows } = await main.query<{ id: string }>('SELECT pg_export_snapshot() AS id');
      for (let i = 1; i < jobs; i++) {
        const worker = await open();
        await worker.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
        await worker.query(`SET TRANSACTION SNAPSHOT '${rows[0].id.replaceAll("'", "''")}'`);
        await rules?.prepareSession(worker);
        workers.push(worker);
      }
    }

    phases.mark('connect');
    const totalBytes = tables.reduce((sum, t) => sum + t.bytes, 0);
    const progress = new ProgressMeter((line) => request.log?.(`dumping ${snapshotId}: ${line}`)).start();
    const written = new Map<SourceTable, Awaited<ReturnType<typeof dumpTable>>>();
    const queue = [...tables].sort((a, b) => b.bytes - a.bytes);
    request.log?.(`dumping ${tables.length} tables (about ${(totalBytes / 1e6).toFixed(1)} MB on disk) with ${jobs} connection(s)`);
    let failed = false;
    try {
      // allSettled, not all: when one worker fails the others stop taking tables and finish their
      // current file before the directory is removed, and the first error is the one reported.
      const settled = await Promise.allSettled(
        workers.map(async (worker) => {
          for (let table = queue.shift(); table && !failed; table = queue.shift()) {
            try {
              const result = await dumpTable(worker, table, join(workDir, files.get(table)!), progress, rules);
              progress.addRows(result.rows);
              written.set(table, result);
            } catch (error) {
              failed = true;
              throw error;
            }
          }
        }),
      );
      const rejected = settled.find((result): result is PromiseRejectedResult => result.status === 'rejected');
      if (rejected) throw rejected.reason;
    } finally {
      progress.stop();
    }
    phases.mark('copy');
    const sequences = await readOwnedSequences(main, tables);
    for (const client of clients) await client.query('COMMIT');

    const manifestTables: ManifestTable[] = tables.map((table) => ({
      name: formatQualifiedName(table),
      schema: table.schema,
      table: table.name,
      file: files.get(table)!,
      columns: table.columns,
      ...written.get(table)!,
      ...rules?.manifestTable(table),
    }));
    const manifest: SnapshotManifest = {
      formatVersion: 1,
      snapshotId,
      source,
      date: request.date,
      createdAt: new Date().toISOString(),
      tables: manifestTables,
      sequences,
      ...(rules ? { rules: rules.manifest } : {}),
    };
    const manifestPath = join(workDir, MANIFEST_FILE);
    await writeFile(manifestPath, `${JSON.stringify(manifest, null, 2)}\n`);
    await fsyncPath(manifestPath);
    await rename(workDir, finalDir);
    await fsyncPath(request.snapshotDir);
    phases.mark('manifest');
    request.log?.(`${snapshotId} phases: ${phases.toString()}`);
    return { manifest, location: finalDir };
  } catch (error) {
    await Promise.all(clients.map((client) => client.end().catch(() => undefined)));
    // The original error is what matters (a cleanup failure must not turn a transient error permanent).
    await rm(workDir, { recursive: true, force: true }).catch(() => undefined);
    throw error;
  } finally {
    await Promise.all(clients.map((client) => client.end().catch(() => undefined)));
  }
}
