import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Client } from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { type LoadDrift, type SnapshotManifest, type SnapshotReadyPayload } from '@app/common/contract';
import { isSameDatabase, parseQualifiedName, serverIdentity, quoteIdent, quoteQualified } from '@app/common/database';
import { PhaseTimer, ProgressMeter } from '@app/common/observability';
import { DigestStream } from '@app/common/streams';
import { ensureLedger, findLedgerEntry, forgetLoad, type LedgerEntry, lockLedger, markAnnounced, newerLoadedSnapshot, recordLoad } from './ledger';
import { checkFileSizes, readCsvHeader, readManifest, SnapshotFileError } from './snapshot-files';
import { type DriftTarget, resolveWithDrift, type SchemaDriftMode, stagedCopySql } from './schema-drift';
import { deferrableIndexes, foreignKeysTouching, type IndexDefinition, type TargetTable, TargetSchemaError } from './target-schema';

const READ_BUFFER = 1 << 20;

export type LoadResult =
  | { kind: 'loaded'; rows: number; durationMs: number; drift?: LoadDrift }
  | { kind: 'already-loaded'; entry: LedgerEntry }
  /** The target already holds a snapshot dumped later: loading this one would go back in time. */
  | { kind: 'superseded'; by: string };

export interface LoadHooks {
  /** Progress lines (start of the COPY phase, then every few seconds). */
  log?: (line: string) => void;
}

export interface LoadRequest extends LoadHooks {
  snapshot: SnapshotReadyPayload;
  /** The snapshot's directory, already confined to SNAPSHOT_DIR (resolveSnapshotDir). */
  dir: string;
  targetDatabaseUrl: string;
  environment: string;
  attempt: number;
  /** A reload by hand: load even if the ledger has this snapshot or a newer one. */
  force?: boolean;
  /** SCHEMA_DRIFT (default fail). */
  schemaDrift?: SchemaDriftMode;
}

export function targetClient(url: string): Client {
  const client = new Client({
    connectionString: url,
    application_name: 'db-fanout-loader',
    // A dead peer or a half-open connection must surface as an error (transient, retried), not a hang.
    keepAlive: true,
    connectionTimeoutMillis: 30_000,
  });
  // An idle connection killed by the server must not crash the process; the next query reports it.
  client.on('error', () => undefined);
  return client;
}

/**
 * Loads one snapshot into the target in ONE transaction: truncate, COPY every table, set the
 * sequences, record the ledger row, commit. Any error rolls everything back: the environment shows
 * the whole new snapshot or its previous data, never a mix.
 */
export async function loadSnapshot(request: LoadRequest): Promise<LoadResult> {
  const started = Date.now();
  const phases = new PhaseTimer();
  const { dir } = request;
  const manifest = await readManifest(dir, request.snapshot);
  await checkFileSizes(dir, manifest);
  const headers = await Promise.all(manifest.tables.map((table) => readCsvHeader(join(dir, table.file))));
  manifest.tables.forEach((table, index) => {
    if (headers[index].join('\u0000') !== table.columns.join('\u0000')) {
      throw new SnapshotFileError(`CSV header of ${table.file} does not match the manifest's columns for ${table.name}`);
    }
  });

  phases.mark('files');
  const client = targetClient(request.targetDatabaseUrl);
  await client.connect();
  try {
    const target = await serverIdentity(client);
    if (isSameDatabase(manifest.source, target)) {
      throw new TargetSchemaError(
        `refusing to load snapshot ${manifest.snapshotId} into its own source database ${target.database} (system ${target.systemIdentifier})`,
      );
    }
    await ensureLedger(client);
    const entry = request.force ? undefined : await findLedgerEntry(client, manifest.snapshotId);
    if (entry) return { kind: 'already-loaded', entry };

    await client.query('BEGIN');
    try {
      await lockLedger(client);
      if (request.force) {
        await forgetLoad(client, manifest.snapshotId);
      } else {
        const loadedMeanwhile = await findLedgerEntry(client, manifest.snapshotId);
        if (loadedMeanwhile) {
          await client.query('ROLLBACK');
          return { kind: 'already-loaded', entry: loadedMeanwhile };
        }
        const newer = await newerLoadedSnapshot(client, manifest.createdAt);
        if (newer) {
          await client.query('ROLLBACK');
          return { kind: 'superseded', by: newer };
        }
      }
      const { rows, drift } = await loadTables(client, dir, manifest, request, phases);
      const durationMs = Date.now() - started;
      await recordLoad(client, {
        snapshotId: manifest.snapshotId,
        date: manifest.date,
        createdAt: manifest.createdAt,
        environment: request.environment,
        rows,
        durationMs,
        attempts: request.attempt,
      });
      await client.query('COMMIT');
      phases.mark('commit');
      request.log?.(`${manifest.snapshotId} phases: ${phases.toString()}`);
      return { kind: 'loaded', rows, durationMs, ...(drift ? { drift } : {}) };
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    }
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Session settings for the load's transaction only: index builds get room to sort in memory. */
const LOAD_SETTINGS = [
  "SET LOCAL maintenance_work_mem = '256MB'",
  // With several loads sharing a server, parallel index workers only add contention (measured).
  'SET LOCAL max_parallel_maintenance_workers = 0',
  // A session idling in a transaction on the target must not stall the load forever: give up
  // (lock_not_available, retried as transient) instead of waiting behind it.
  "SET LOCAL lock_timeout = '60s'",
];

/**
 * The load itself, inside the caller's transaction. Work that would otherwise happen per row is
 * deferred to one pass at the end: foreign keys and indexes are dropped and rebuilt (every
 * constraint is re-validated before commit), and COPY runs with FREEZE (the tables were truncated in
 * this transaction, so rows are written already frozen and need no later rewrite).
 */
async function loadTables(client: Client, dir: string, manifest: SnapshotManifest, hooks: LoadRequest, phases: PhaseTimer): Promise<{ rows: number; drift?: LoadDrift }> {
  const { targets, drift } = await resolveWithDrift(client, manifest.tables, hooks.schemaDrift ?? 'fail');
  if (drift) hooks.log?.(`schema drift (SCHEMA_DRIFT=common-columns): ${JSON.stringify(drift)}`);
  const foreignKeys = await foreignKeysTouching(client, targets.map((t) => t.oid));
  const indexes = await deferrableIndexes(client, targets);
  for (const setting of LOAD_SETTINGS) await client.query(setting);
  for (const fk of foreignKeys) {
    await client.query(`ALTER TABLE ${fk.table} DROP CONSTRAINT ${quoteIdent(fk.name)}`);
  }
  const dropped = await dropIndexesWherePossible(client, indexes);
  // ONLY: inheritance children that are not in the snapshot keep their rows (partitions are loaded
  // through their parent, so a partitioned table is truncated whole).
  await client.query(`TRUNCATE ${targets.map((t) => (t.partitioned ? '' : 'ONLY ') + qualified(t)).join(', ')}`);
  phases.mark('prepare');

  const totalBytes = manifest.tables.reduce((sum, t) => sum + t.bytes, 0);
  hooks.log?.(`copying ${targets.length} tables (${(totalBytes / 1e6).toFixed(1)} MB) of ${manifest.snapshotId}`);
  const progress = new ProgressMeter((line) => hooks.log?.(`loading ${manifest.snapshotId}: ${line}`), totalBytes).start();
  let rows = 0;
  try {
    for (const target of targets) {
      const copied = await copyTable(client, dir, target, progress);
      progress.addRows(copied);
      rows += copied;
    }
  } finally {
    progress.stop();
  }
  phases.mark('copy');

  for (const index of dropped) {
    await client.query(index.constraint ? `ALTER TABLE ${index.table} ADD CONSTRAINT ${quoteIdent(index.name)} ${index.definition}` : index.definition);
    if (index.clustered) await client.query(`ALTER TABLE ${index.table} CLUSTER ON ${quoteIdent(index.name)}`);
    if (index.comment !== null) {
      const object = index.constraint ? `CONSTRAINT ${quoteIdent(index.name)} ON ${index.table}` : `INDEX ${quoteIdent(index.schema)}.${quoteIdent(index.name)}`;
      await client.query(`COMMENT ON ${object} IS ${quoteLiteral(index.comment)}`);
    }
  }
  phases.mark('indexes');
  for (const sequence of manifest.sequences) {
    await client.query('SELECT setval(pg_get_serial_sequence($1, $2), $3::bigint, $4)', [
      quoteQualified({ schema: sequence.schema, name: sequence.tableName }),
      sequence.column,
      sequence.lastValue,
      sequence.isCalled,
    ]);
  }
  for (const fk of foreignKeys) {
    await client.query(`ALTER TABLE ${fk.table} ADD CONSTRAINT ${quoteIdent(fk.name)} ${fk.definition}`);
  }
  phases.mark('constraints');
  return { rows, drift };
}

/**
 * Drops each deferrable index inside its own savepoint: one that something else depends on (a view
 * grouping by a primary key, say) stays in place and is maintained row by row instead of failing
 * the load. Returns the indexes that were dropped, to rebuild after the COPY.
 */
async function dropIndexesWherePossible(client: Client, indexes: IndexDefinition[]): Promise<IndexDefinition[]> {
  const dropped: IndexDefinition[] = [];
  for (const index of indexes) {
    await client.query('SAVEPOINT drop_index');
    try {
      await client.query(index.constraint ? `ALTER TABLE ${index.table} DROP CONSTRAINT ${quoteIdent(index.name)}` : `DROP INDEX ${quoteIdent(index.schema)}.${quoteIdent(index.name)}`);
      await client.query('RELEASE SAVEPOINT drop_index');
      dropped.push(index);
    } catch (error) {
      if ((error as { code?: string }).code !== '2BP01') throw error; // dependent_objects_still_exist
      await client.query('ROLLBACK TO SAVEPOINT drop_index');
      await client.query('RELEASE SAVEPOINT drop_index');
    }
  }
  return dropped;
}

function quoteLiteral(text: string): string {
  return `'${text.replaceAll("'", "''")}'`;
}

function qualified(target: TargetTable): string {
  return quoteQualified({ schema: target.manifest.schema, name: target.manifest.table });
}

/** Streams one file into COPY FROM, verifying its checksum on the way; a mismatch aborts the COPY. */
async function copyTable(client: Client, dir: string, target: DriftTarget, progress: ProgressMeter): Promise<number> {
  const table = target.manifest;
  // FREEZE needs the table truncated in this transaction (it was) and is refused for partitioned tables.
  const options = target.partitioned ? 'FORMAT csv, HEADER' : 'FORMAT csv, HEADER, FREEZE';
  // SCHEMA_DRIFT=common-columns with columns the target lacks: through a staging table that drops them.
  const staged = target.leftOut.length ? stagedCopySql(target) : undefined;
  if (staged) await client.query(staged.create);
  const copy = client.query(copyFrom(staged?.copy ?? `COPY ${qualified(target)} (${target.columns.map(quoteIdent).join(', ')}) FROM STDIN (${options})`));
  await pipeline(
    createReadStream(join(dir, table.file), { highWaterMark: READ_BUFFER }),
    new DigestStream({ sha256: table.sha256, bytes: table.bytes, label: `${table.file} (${table.name})` }, (bytes) => progress.add(bytes)),
    copy,
  );
  if (copy.rowCount !== table.rows) {
    throw new SnapshotFileError(`${table.file} loaded ${copy.rowCount} rows into ${table.name}, the manifest says ${table.rows}`);
  }
  if (staged) await client.query(staged.insert);
  return copy.rowCount;
}

/**
 * Fresh planner statistics for the loaded tables. Run after the load is committed and announced:
 * the environment is usable without it, and a failure here costs query plans, never data.
 */
export async function analyzeSnapshotTables(targetDatabaseUrl: string, snapshot: SnapshotReadyPayload): Promise<void> {
  const client = targetClient(targetDatabaseUrl);
  await client.connect();
  try {
    // The message's table names were validated against the manifest by the load that just committed.
    const tables = snapshot.tables.map((t) => quoteQualified(parseQualifiedName(t.name))).join(', ');
    await client.query(`ANALYZE ${tables}`);
  } finally {
    await client.end().catch(() => undefined);
  }
}

export async function markLoadAnnounced(targetDatabaseUrl: string, snapshotId: string): Promise<void> {
  const client = targetClient(targetDatabaseUrl);
  await client.connect();
  try {
    await markAnnounced(client, snapshotId);
  } finally {
    await client.end().catch(() => undefined);
  }
}
