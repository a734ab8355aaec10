import { pipeline } from 'node:stream/promises';
import type { PoolClient } from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { type LoadTriggers } from '@app/common/config';
import { type LoadDrift, type ManifestTable, type SnapshotManifest, type SnapshotReadyPayload, snapshotInstant } from '@app/common/contract';
import { isSameDatabase, partitionLeaves, quoteIdent, quoteQualified } from '@app/common/database';
import { PhaseTimer, ProgressMeter } from '@app/common/observability';
import { DigestStream } from '@app/common/streams';
import type { TargetDatabase } from './database/target-database';
import { type LedgerEntry } from './ledger';
import type { TargetLoad } from './load/target-load';
import type { Readable } from 'node:stream';
import type { SnapshotSource } from '@app/common/snapshot-store';
import { checkFileSizes, directorySource, openTableData, readCsvHeader, readManifest, SnapshotFileError } from './snapshot-files';
import { dropForeignKeys, dropIndexesWherePossible, rebuildIndexes, restoreForeignKeys } from './load/indexes';
import { dropNotValidChecks, notValidChecks, restoreNotValidChecks } from './load/not-valid-checks';
import { checkReferencesFromOutside } from './load/references';
import { applyLoadSettings, COMPUTING_SETTINGS, jitOffUntilData, ownSettingsForData } from './load/session-settings';
import { setSequences } from './load/sequences';
import { lockAgainstChanges } from './load/table-locks';
import { disableUserTriggers, restoreUserTriggers } from './load/triggers';
import { type DriftTarget, insertStaged, resolveWithDrift, type SchemaDriftMode, sequencesToSet, stagedCopySql } from './schema-drift';
import { type TargetTable, TargetSchemaError } from './target-schema';


export type LoadResult =
  /** `loadedAt`: when the transaction committed (ISO 8601, this process's clock, as snapshot.load.started's `startedAt`). */
  | { kind: 'loaded'; rows: number; durationMs: number; loadedAt: string; drift?: LoadDrift }
  | { kind: 'already-loaded'; entry: LedgerEntry }
  /** The target already holds a snapshot dumped later: loading this one would go back in time. */
  | { kind: 'superseded'; by: string };

export interface LoadHooks {
  /** Progress lines (start of the COPY phase, then every few seconds). */
  log?: (line: string) => void;
  /** Called once the ledger says there is work (not loaded yet, nothing newer), before the load starts. */
  onWork?: () => Promise<void>;
  /**
   * The app stopping: a load waiting for another one's lock, or for its tables' locks, gives up
   * within about a second (and is delivered again later).
   */
  signal?: AbortSignal;
}

export interface LoadRequest extends LoadHooks {
  snapshot: SnapshotReadyPayload;
  /** The snapshot's directory, already confined to SNAPSHOT_DIR (resolveSnapshotDir)... */
  dir?: string;
  /** ...or the snapshot in an object store (SNAPSHOT_STORE=nats or s3). */
  source?: SnapshotSource & { label: string };
  /** Cut a download that delivers nothing for this long (object stores; see STALL_TIMEOUT_MS). */
  stallMs?: number;
  environment: string;
  attempt: number;
  /** A reload by hand: load even if the ledger has this snapshot or a newer one. */
  force?: boolean;
  /** The reload request's stream sequence: recorded with the load, so a redelivery of the request loads nothing. */
  reloadSequence?: number;
  /** LOAD_TRIGGERS: `disable` (default) keeps the environment's own triggers from firing for loaded rows. */
  triggers?: LoadTriggers;
  /** SCHEMA_DRIFT (default fail). */
  schemaDrift?: SchemaDriftMode;
  /** LOAD_MAINTENANCE_WORK_MEM in kB (default 1GB, see applyLoadSettings). */
  maintenanceWorkMemKb?: number;
}

/**
 * Downloads opened at once to read the tables' headers: a snapshot of 300 tables must not open 300
 * S3 requests or Object Store consumers together (the SDK keeps 50 sockets; each consumer is state
 * on the broker).
 */
const HEADER_READS_AT_ONCE = 8;

/** `work` over `items`, at most `limit` at a time, the results in order; after a failure no new item starts. */
async function mapAtMost<T, R>(limit: number, items: readonly T[], work: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (!failed && next < items.length) {
      const index = next++;
      try {
        results[index] = await work(items[index]);
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/**
 * Loads one snapshot into the target in ONE transaction: truncate, COPY every table, set the
 * sequences, record the ledger row, commit. Any error rolls everything back: the environment shows
 * the whole new snapshot or its previous data, never a mix.
 */
export async function loadSnapshot(database: TargetDatabase, request: LoadRequest): Promise<LoadResult> {
  const started = Date.now();
  const phases = new PhaseTimer();
  const source = request.source ?? directorySource(requireDir(request.dir));
  const manifest = await readManifest(source, request.snapshot);
  await checkFileSizes(source, manifest);
  const open = (table: ManifestTable) => openTableData(source, manifest, table, request.stallMs);
  const headers = await mapAtMost(HEADER_READS_AT_ONCE, manifest.tables, async (table) => {
    const data = await open(table);
    try {
      return await readCsvHeader(data, table.file);
    } finally {
      // Closed before the next one opens: the bound is on downloads, not on header reads.
      if (!data.closed) await new Promise((resolve) => data.once('close', resolve).destroy());
    }
  });
  manifest.tables.forEach((table, index) => {
    if (headers[index].join('\u0000') !== table.columns.join('\u0000')) {
      throw new SnapshotFileError(`CSV header of ${table.file} does not match the manifest's columns for ${table.name}`);
    }
  });

  phases.mark('files');
  // Before anything is written, the ledger's schema included.
  const target = await database.identity();
  if (isSameDatabase(manifest.source, target)) {
    throw new TargetSchemaError(
      `refusing to load snapshot ${manifest.snapshotId} into its own source database ${target.database} (system ${target.systemIdentifier})`,
    );
  }
  const load = await database.begin();
  try {
    // Cheap check first: a redelivery of a loaded snapshot does not wait behind another load's lock.
    const entry = request.force ? undefined : await load.ledger.find(manifest.snapshotId);
    if (entry) return { kind: 'already-loaded', entry };

    await load.ledger.lock({
      signal: request.signal,
      onWait: (holders) => request.log?.(`waiting for another load to finish (the ledger's lock is held by ${holders})`),
    });
    if (request.force) {
      // This very request, delivered again after its load committed (an ack lost, a loader killed
      // before it acked): done already. Loading it again could move the environment back behind a
      // snapshot loaded since.
      const done = await load.ledger.find(manifest.snapshotId);
      if (done && request.reloadSequence !== undefined && done.reloadSeq === request.reloadSequence) return { kind: 'already-loaded', entry: done };
      await load.ledger.forget(manifest.snapshotId);
    } else {
      const loadedMeanwhile = await load.ledger.find(manifest.snapshotId);
      if (loadedMeanwhile) return { kind: 'already-loaded', entry: loadedMeanwhile };
      const newer = await load.ledger.newerLoadedSnapshot(snapshotInstant(manifest));
      if (newer) return { kind: 'superseded', by: newer };
    }
    await request.onWork?.();
    const ownSettings = await database.ownSettings(COMPUTING_SETTINGS, request.log);
    const { rows, drift } = await loadTables(load, open, manifest, request, phases, request.triggers ?? 'disable', ownSettings);
    const durationMs = Date.now() - started;
    await load.ledger.record({
      snapshotId: manifest.snapshotId,
      date: manifest.date,
      createdAt: manifest.createdAt,
      takenAt: snapshotInstant(manifest),
      environment: request.environment,
      rows,
      durationMs,
      attempts: request.attempt,
      drift,
      ...(request.force && request.reloadSequence !== undefined ? { reloadSeq: request.reloadSequence } : {}),
    });
    await load.commit();
    const loadedAt = new Date().toISOString();
    phases.mark('commit');
    request.log?.(`${manifest.snapshotId} phases: ${phases.toString()}`);
    return { kind: 'loaded', rows, durationMs, loadedAt, ...(drift ? { drift } : {}) };
  } finally {
    // After a commit this does nothing; otherwise (an error, or nothing to load) nothing changed.
    await load.rollback();
  }
}

/**
 * The load itself, inside the caller's transaction, leaving the environment the way `pg_restore`
 * would: production's rows, production's sequences, the environment's own triggers silent for the
 * loaded rows, materialized views refreshed. Work that would otherwise happen per row is deferred to
 * one pass at the end: foreign keys and indexes are dropped and rebuilt exactly as they were (every
 * constraint is re-validated before commit), and COPY runs with FREEZE (the tables were truncated in
 * this transaction, so rows are written already frozen and need no later rewrite).
 */
async function loadTables(
  load: TargetLoad,
  open: (table: ManifestTable) => Promise<Readable>,
  manifest: SnapshotManifest,
  hooks: LoadRequest,
  phases: PhaseTimer,
  triggerMode: LoadTriggers,
  ownSettings: Readonly<Record<string, string>>,
): Promise<{ rows: number; drift?: LoadDrift }> {
  const { client, catalog } = load;
  const mode = hooks.schemaDrift ?? 'fail';
  const jitForData = await jitOffUntilData(client);
  // Before the catalog is read: what is read below (indexes, keys, triggers, checks) is replayed at
  // the end, so a migration committed between the read and the load's own DDL would be undone.
  // Waited for in slices: a stopping app ends the wait within about a second. With them, the tables
  // outside the snapshot whose foreign keys to or from it are dropped and re-added below.
  const lockWait = { signal: hooks.signal, log: hooks.log, startedAt: Date.now() };
  await lockAgainstChanges(client, (await resolveWithDrift(client, manifest.tables, mode)).targets, lockWait);
  // Resolved again under the lock, which took the tables by name: a table swapped while the load
  // waited (renamed aside, a new one created) is the new one, its own triggers and indexes included.
  const { targets, drift, notTables } = await resolveWithDrift(client, manifest.tables, mode);
  // The new one's keys may lead to tables outside the snapshot the first lock did not take: they are
  // taken now (what is held already is granted at once), within what is left of the same 60 s. No key
  // to or from a locked table can be added or dropped any more, so foreignKeysTouching below reads
  // the keys these locks cover.
  await lockAgainstChanges(client, targets, lockWait);
  const toSet = await sequencesToSet(client, manifest.sequences, targets, drift);
  if (drift && toSet.unset.length) drift.unsetSequences = toSet.unset;
  if (notTables) hooks.log?.(`skipped (SCHEMA_DRIFT=common-columns): ${notTables.join('; ')}`);
  if (drift) hooks.log?.(`schema drift (SCHEMA_DRIFT=common-columns): ${JSON.stringify(drift)}`);
  if (toSet.unset.length) {
    hooks.log?.(`sequence(s) of production that only a skipped table or a left-out column uses, none of the target's loaded columns, left unset: ${toSet.unset.join(', ')}`);
  }
  const oids = targets.map((t) => t.oid);
  const sequences = await catalog.resolveSequences(toSet.credited);
  for (const sequence of toSet.shared) if (!sequences.some((s) => s.name === sequence.name)) sequences.push(sequence);
  const standalone = await catalog.resolveStandaloneSequences(manifest.standaloneSequences ?? []);
  // A sequence no loaded column uses is no table's data: one the environment lacks, or the loader's
  // role does not own, is left unset, said in the log, and never fails the load (snapshots of
  // earlier releases did not list them).
  if (standalone.missing.length) hooks.log?.(`sequence(s) of production that no column uses are not in the target, left unset: ${standalone.missing.join(', ')}`);
  if (standalone.notOwned.length) hooks.log?.(`sequence(s) of production that no loaded column uses are not the loader role's own, left unset: ${standalone.notOwned.join(', ')}`);
  for (const sequence of standalone.resolved) if (!sequences.some((s) => s.name === sequence.name)) sequences.push(sequence);
  // Before anything is truncated: rows outside the snapshot that would lose what they reference.
  await checkReferencesFromOutside(client, open, await catalog.foreignKeysFromOutside(targets), ownSettings);
  const foreignKeys = await catalog.foreignKeysTouching(oids);
  const indexes = await catalog.deferrableIndexes(targets);
  const triggers = triggerMode === 'disable' ? await catalog.userTriggers(oids) : [];
  const materializedViews = await catalog.dependentMaterializedViews(oids);
  const checks = await notValidChecks(client, oids);
  await applyLoadSettings(client, hooks.maintenanceWorkMemKb);
  await disableUserTriggers(client, triggers);
  await dropForeignKeys(client, foreignKeys);
  // Indexes before checks: each index is dropped in a savepoint, and PostgreSQL refuses a savepoint
  // after ALTER DOMAIN ... DROP CONSTRAINT in the same transaction (XX000, unprocessed inval messages).
  const dropped = await dropIndexesWherePossible(client, indexes);
  await dropNotValidChecks(client, checks);
  // ONLY: inheritance children that are not in the snapshot keep their rows (partitions are loaded
  // through their parent, so a partitioned table is truncated whole).
  const { truncated, localLeaves } = await truncateTargets(client, targets);
  if (truncated.length) await client.query(`TRUNCATE ${truncated.join(', ')}`);
  await jitForData();
  // From here on the database computes (generated columns, defaults, checks, triggers, expression
  // indexes, refreshes): under the environment's own TimeZone and DateStyle, as pg_restore would,
  // not the pinned UTC of the catalog reads.
  const pinnedAfterData = await ownSettingsForData(client, ownSettings);
  phases.mark('prepare');

  const totalBytes = manifest.tables.reduce((sum, t) => sum + t.bytes, 0);
  hooks.log?.(`copying ${targets.length} tables (${(totalBytes / 1e6).toFixed(1)} MB) of ${manifest.snapshotId}`);
  const progress = new ProgressMeter((line) => hooks.log?.(`loading ${manifest.snapshotId}: ${line}`), totalBytes).start();
  let rows = 0;
  try {
    for (const target of targets) {
      const copied = await copyTable(client, () => open(target.manifest), target, progress);
      const leaves = localLeaves.get(target.oid);
      if (leaves) await refuseRowsSentAway(client, target, leaves, copied);
      progress.addRows(copied);
      rows += copied;
    }
  } finally {
    progress.stop();
  }
  phases.mark('copy');

  await rebuildIndexes(client, dropped);
  phases.mark('indexes');
  await setSequences(client, sequences);
  await restoreForeignKeys(client, foreignKeys);
  await restoreNotValidChecks(client, checks);
  phases.mark('constraints');
  // In the transaction, so the environment never shows a view out of step with its tables.
  for (const view of materializedViews) await client.query(`REFRESH MATERIALIZED VIEW ${view}`);
  if (materializedViews.length) phases.mark('views');
  await pinnedAfterData();
  await restoreUserTriggers(client, triggers);
  return { rows, drift };
}

/**
 * What the TRUNCATE names: ordinary tables ONLY (inheritance children that are not in the snapshot
 * keep their rows), a partitioned table whole, unless some of its partitions are foreign tables:
 * TRUNCATE would empty their tables on the other server (postgres_fdw truncates remotely), which
 * no snapshot fills (the dump leaves foreign data out). Then its local leaves, each ONLY.
 */
async function truncateTargets(client: PoolClient, targets: TargetTable[]): Promise<{ truncated: string[]; localLeaves: Map<number, string[]> }> {
  const leaves = await partitionLeaves(
    client,
    targets.filter((t) => t.partitioned).map((t) => t.oid),
  );
  const localLeaves = new Map<number, string[]>();
  const truncated = targets.flatMap((t) => {
    if (!t.partitioned) return [`ONLY ${qualified(t)}`];
    const own = leaves.filter((leaf) => leaf.root === t.oid);
    if (!own.some((leaf) => leaf.foreign)) return [qualified(t)];
    localLeaves.set(t.oid, own.filter((leaf) => !leaf.foreign).map((leaf) => quoteQualified(leaf)));
    return localLeaves.get(t.oid)!.map((name) => `ONLY ${name}`);
  });
  return { truncated, localLeaves };
}

/**
 * A partitioned table with foreign partitions: every copied row must have landed in a local one.
 * A row routed to a foreign partition (the environment's layout differs from production's) would
 * be written on the other server, and added there again by every load, as nothing there is
 * truncated: the load fails instead, and its rollback takes back what postgres_fdw sent.
 */
async function refuseRowsSentAway(client: PoolClient, target: TargetTable, leaves: string[], copied: number): Promise<void> {
  const counts = leaves.map((leaf) => `(SELECT count(*) FROM ONLY ${leaf})`).join(' + ') || '0';
  const { rows } = await client.query<{ local: string }>(`SELECT (${counts})::text AS local`);
  const away = copied - Number(rows[0].local);
  if (away > 0) {
    throw new TargetSchemaError(
      `${away} of the ${copied} rows of ${target.manifest.name} belong to foreign partitions of it in this environment; the load does not write to another server: make those partitions local, or leave the table out`,
    );
  }
}

function qualified(target: TargetTable): string {
  return quoteQualified({ schema: target.manifest.schema, name: target.manifest.table });
}

/**
 * Streams one file into COPY FROM, verifying its checksum on the way; a mismatch aborts the COPY.
 * The file is opened only once the COPY is about to take it: a statement failing before (the
 * staging table's) must not leave a download open (an S3 socket, an Object Store consumer).
 */
async function copyTable(client: PoolClient, openData: () => Promise<Readable>, target: DriftTarget, progress: ProgressMeter): Promise<number> {
  const table = target.manifest;
  // FREEZE needs the table truncated in this transaction (it was) and is refused for partitioned tables.
  const options = target.partitioned ? 'FORMAT csv, HEADER' : 'FORMAT csv, HEADER, FREEZE';
  // SCHEMA_DRIFT=common-columns with columns the target lacks: through a staging table that drops them
  // (a file of no columns too), then an INSERT that insertStaged makes take the rows as COPY would.
  const staged = target.leftOut.length || target.columns.length === 0 ? stagedCopySql(target) : undefined;
  if (staged) await client.query(staged.create);
  const data = await openData();
  const copy = client.query(copyFrom(staged?.copy ?? `COPY ${qualified(target)} (${target.columns.map(quoteIdent).join(', ')}) FROM STDIN (${options})`));
  await pipeline(
    data,
    new DigestStream({ sha256: table.sha256, bytes: table.bytes, label: `${table.file} (${table.name})` }, (bytes) => progress.add(bytes)),
    copy,
  );
  if (copy.rowCount !== table.rows) throw await rowCountError(client, target, copy.rowCount ?? 0, staged !== undefined);
  if (staged) await insertStaged(client, target, staged, copy.rowCount);
  return copy.rowCount;
}

/**
 * COPY wrote another number of rows than the manifest lists. The file matched its digest on the
 * way in, so it holds what the dumper wrote: fewer rows with the environment's own BEFORE INSERT
 * row triggers firing (LOAD_TRIGGERS=fire; on the table or, routed there, its partitions) means a
 * trigger skipped them (returned NULL), which is the environment's doing, named as such. Otherwise
 * the manifest's count disagrees with its own file.
 */
async function rowCountError(client: PoolClient, target: DriftTarget, written: number, intoStaging: boolean): Promise<Error> {
  const table = target.manifest;
  // A staging table has no triggers: there, any difference is the file's.
  if (written < table.rows && !intoStaging) {
    // tgtype: ROW 1, BEFORE 2, INSERT 4. 'O' and 'A' fire in an ordinary session; 'R' and 'D' do not.
    const { rows } = await client.query<{ name: string }>(
      `SELECT format('%I.%I.%I', n.nspname, c.relname, t.tgname) AS name
         FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE (t.tgrelid = $1::regclass OR t.tgrelid IN (SELECT relid FROM pg_partition_tree($1::regclass))) AND NOT t.tgisinternal
          AND t.tgenabled IN ('O', 'A') AND t.tgtype::int & 7 = 7
        ORDER BY 1`,
      [target.oid],
    );
    if (rows.length) {
      return new TargetSchemaError(
        `${table.name}: COPY wrote ${written} of the ${table.rows} rows of ${table.file}, which matched its digest: a BEFORE INSERT trigger of the environment returned NULL for the others (LOAD_TRIGGERS=fire; firing: ${rows.map((r) => r.name).join(', ')})`,
      );
    }
  }
  return new SnapshotFileError(`${table.file} loaded ${written} rows into ${table.name}, the manifest says ${table.rows}`);
}

function requireDir(dir: string | undefined): string {
  if (!dir) throw new Error('loadSnapshot needs the snapshot directory or a snapshot source');
  return dir;
}
