import { randomBytes } from 'node:crypto';
import { PassThrough, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { PoolClient } from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import { compactDate, type ManifestTable, type SnapshotManifest } from '@app/common/contract';
import { formatIdent, formatQualifiedName, localPartitionsSql, type LockWatch, quoteIdent, quoteQualified, serverIdentity, watchProductionLockWaits } from '@app/common/database';
import { locateFailure, PhaseTimer, ProgressMeter } from '@app/common/observability';
import { COMPRESSED_SUFFIX, compressor, FsSnapshotStore, type SnapshotCompression, type SnapshotStore, type SnapshotUpload } from '@app/common/snapshot-store';
import type { RulesFile } from '@app/common/rules';
import { CoalescingStream, DigestStream } from '@app/common/streams';
import { DumpSessions } from './dump-sessions';
import { DumpRules } from '@app/common/rules/dump';
import { type DumpSessionSource, SourceDatabase } from './source-database';
import { RowSecurityError, type SourceTable, TableCatalog } from './table-catalog';

export interface SnapshotRequest {
  date: string;
  /** The source's sessions (the dumper's SourceDatabase)... */
  source?: DumpSessionSource;
  /** ...or, for tests and tools, a URL: the dump then opens and closes a SourceDatabase of its own. */
  sourceDatabaseUrl?: string;
  /** Where the snapshot is written; a directory store on `snapshotDir` when absent. */
  store?: SnapshotStore;
  snapshotDir: string;
  /** `gzip`: every table's object is compressed (level 1) on the way; the manifest says so. */
  compression?: SnapshotCompression;
  tables: { schema: string; name: string }[];
  excludeTables: { schema: string; name: string }[];
  /** Connections dumping tables at once (default 1), all reading one exported snapshot. */
  jobs?: number;
  /** DUMP_RULES: masking, the strict gate and subsetting, applied in production's own COPY query. */
  rules?: RulesFile;
  /** MASKING_KEY, for keyed strategies; never logged, never in the manifest (its id is). */
  maskingKey?: string;
  log?: (line: string) => void;
  /**
   * Called with the snapshot's id once every table is written, just before the manifest makes it a
   * snapshot: the dumper records it as its own there, so a snapshot it dies before announcing is
   * still known as its own (see snapshot-records.ts).
   */
  beforeCommit?: (snapshotId: string) => Promise<void>;
  /** Called, after `beforeCommit`, when the manifest could not be written and the snapshot was removed. */
  afterAbort?: (snapshotId: string) => Promise<void>;
  /**
   * The app's stop (SIGTERM). Until every table is read and the sessions have committed, an abort
   * ends the attempt at once, as a failed worker does: its sessions are closed (a COPY or a LOCK
   * waiting for production is cut off, and the server releases the attempt's locks), the upload is
   * aborted, and the dump rejects with a DumpStoppedError. Later (the manifest's upload) the
   * snapshot is completed: it is as good as written.
   */
  signal?: AbortSignal;
  /** Called when `signal` ends the attempt (not when it comes too late to). */
  onStop?: () => void;
}

/**
 * A dump attempt ended by the app's stop. Named `AbortError`, as a wait the stop cuts short is: the
 * retries stop, and on the message's last delivery it is reported as `stopped-on-last-delivery`.
 */
export class DumpStoppedError extends Error {
  override readonly name = 'AbortError';
}

export interface WrittenSnapshot {
  manifest: SnapshotManifest;
  location: string;
}

/**
 * Pieces the dump gathers COPY's output into (and the most a stage buffers). 128 KiB, not 1 MiB:
 * the apps run with a small young generation (`--max-semi-space-size=2`, see `npm run
 * start:dumper`), where a 1 MiB buffer often outlives a scavenge, moves to the old generation and is
 * freed only by a full GC. Measured at scale 50 with 4 MB semi-spaces (3 runs each, alternating):
 * dumper peaks of 170-190 MB with 1 MiB pieces, 114-120 MB with 128 KiB ones, which also cost less
 * CPU (1.39-1.48 s against 1.55-1.70 s).
 */
const WRITE_BUFFER = 128 * 1024;

export function newSnapshotId(date: string): string {
  return `${compactDate(date)}-${randomBytes(4).toString('hex')}`;
}

/** A file name that says which table it holds but can never contain a path separator. */
function fileNameFor(index: number, table: SourceTable, compression: SnapshotCompression): string {
  const safe = (s: string) => s.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 60);
  return `${String(index + 1).padStart(4, '0')}_${safe(table.schema)}.${safe(table.name)}.csv${COMPRESSED_SUFFIX[compression]}`;
}

/** What COPY reads for one table: its columns in file order; a partitioned table through a query (COPY cannot read it directly). */
export function copySourceSql(table: SourceTable): string {
  const columns = table.columns.map(quoteIdent).join(', ');
  if (table.localPartitions) return `(SELECT ${columns} FROM ${localPartitionsSql({ ...table, localPartitions: table.localPartitions })})`;
  if (table.partitioned) return `(SELECT ${columns} FROM ${quoteQualified(table)})`;
  // A table without columns (all dropped, or only generated ones): COPY cannot name an empty list,
  // and a query writes what `COPY t` would: an empty header line, then an empty line per row.
  return columns ? `${quoteQualified(table)} (${columns})` : `(SELECT FROM ONLY ${quoteQualified(table)})`;
}

/**
 * Streams one table through COPY TO into the snapshot store, hashing the CSV in the same pass (and
 * compressing it after the hash, when asked); memory stays flat.
 */
async function dumpTable(
  client: PoolClient,
  table: SourceTable,
  upload: SnapshotUpload,
  file: string,
  compression: SnapshotCompression,
  progress: ProgressMeter,
  rules?: DumpRules,
): Promise<{ rows: number; bytes: number; sha256: string; storedBytes?: number }> {
  // With DUMP_RULES the values are masked by the source's own query: originals never leave it.
  const source = rules ? `(${rules.selectSql(table)})` : copySourceSql(table);
  const copy = client.query(copyTo(`COPY ${source} TO STDOUT (FORMAT csv, HEADER)`));
  const digest = new DigestStream(undefined, (bytes) => progress.add(bytes));
  const body = new PassThrough({ highWaterMark: WRITE_BUFFER });
  const gzip = compressor(compression);
  const stages: Transform[] = [new CoalescingStream(WRITE_BUFFER), digest, ...(gzip ? [gzip] : [])];
  // A failed upload must also end the COPY side (and the reverse), or one would wait for the other.
  const storing = upload.put(file, body).catch((error: unknown) => {
    body.destroy(error as Error);
    throw error;
  });
  try {
    const [, stored] = await Promise.all([pipeline([copy, ...stages, body]), storing]);
    return { rows: copy.rowCount, bytes: digest.bytes, sha256: digest.sha256, ...(gzip ? { storedBytes: stored.storedBytes } : {}) };
  } catch (error) {
    throw locateFailure(error, copyLocation(table, error, rules));
  }
}

/**
 * Where a table's COPY failed, in names only: COPY TO gives no CONTEXT, so without it a `division by
 * zero` among hundreds of tables pointed at no rule. For a data exception (22) or a constraint of a
 * domain (23), the columns an `sql` rule masks there are named too: a built-in strategy does not
 * raise them, an expression over the row may. The error keeps its SQLSTATE (transient or not as
 * before) and its value stays withheld (describeFailure).
 */
function copyLocation(table: SourceTable, error: unknown, rules?: DumpRules): string {
  const code = (error as { code?: unknown }).code;
  const sqlColumns = rules && typeof code === 'string' && /^2[23]/.test(code) ? rules.sqlColumns(table) : [];
  return `table ${formatQualifiedName(table)}${sqlColumns.length ? `, columns masked by sql: ${sqlColumns.map(formatIdent).join(', ')}` : ''}`;
}

/** Listing, locking and re-reading the table list is tried this often when production's DDL keeps changing it. */
const TABLE_LIST_TRIES = 3;

interface OpenedSnapshot {
  tables: SourceTable[];
  takenAt: string;
  role: string;
}

/**
 * Opens the leader's snapshot with every table already locked, as the issue of a TRUNCATE demands:
 * a TRUNCATE committed after the snapshot but before the lock would make a table look empty. So the
 * tables are listed outside the snapshot (autocommit, READ COMMITTED), locked at the start of the
 * REPEATABLE READ transaction (LOCK takes no snapshot), and only then is the snapshot taken. The
 * list is read again inside the snapshot; if a table was created, dropped or renamed in between,
 * the transaction is rolled back and the steps start over.
 */
async function openSnapshot(leader: PoolClient, request: SnapshotRequest): Promise<OpenedSnapshot> {
  const catalog = new TableCatalog(leader);
  for (let attempt = 1; ; attempt++) {
    const listed = await catalog.listTables(request.tables, request.excludeTables);
    await leader.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    try {
      await catalog.lockTables(listed);
    } catch (error) {
      await leader.query('ROLLBACK');
      // 42P01: a listed table was dropped or renamed before it could be locked.
      if ((error as { code?: string }).code === '42P01' && attempt < TABLE_LIST_TRIES) continue;
      throw error;
    }
    const { takenAt, role } = await catalog.takeSnapshot();
    const tables = await catalog.listTables(request.tables, request.excludeTables);
    const identity = (list: SourceTable[]) => JSON.stringify(list.map(({ oid, schema, name }) => [oid, schema, name]));
    if (identity(tables) === identity(listed)) return { tables, takenAt, role };
    await leader.query('ROLLBACK');
    if (attempt >= TABLE_LIST_TRIES) throw new Error(`the source's tables kept changing while the dump started (${TABLE_LIST_TRIES} tries)`);
  }
}

/** A worker's table lock, NOWAIT: a conflict means production is waiting for this table, so the attempt ends. */
async function lockForWorker(worker: PoolClient, table: SourceTable): Promise<void> {
  try {
    await new TableCatalog(worker).lockTables([table], { nowait: true });
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code !== '55P03') throw error;
    // Keeps the SQLSTATE: 55P03 is transient, so the attempt is retried after RETRY_DELAY.
    throw Object.assign(
      new Error(
        `a parallel dump worker could not lock ${formatQualifiedName(table)} without waiting: a session in production wants a ` +
          'stronger lock on it (DDL or TRUNCATE), so this attempt ends and lets it through',
        { cause: error },
      ),
      { code },
    );
  }
}

/**
 * Writes a complete snapshot: every table read at one instant (one REPEATABLE READ READ ONLY
 * transaction, shared by the DUMP_JOBS workers through an exported snapshot), into a temporary
 * directory that is renamed into place only when every file and the manifest are on disk. A
 * published snapshot is never modified afterwards.
 *
 * The dump never makes production wait for long: every session has lock_timeout (from the pool),
 * workers lock each table NOWAIT before its COPY (as pg_dump -j does), a watch ends the attempt
 * when production waits for a table because of the dump, for a lock it holds or behind a session
 * that waits for it (libs/common/src/database/lock-watch.ts, from before the first lock), and
 * when any session fails all of them are ended at once, which releases every lock the attempt held.
 * The app's stop (`signal`) ends them the same way: a SIGTERM never waits for a COPY or a LOCK.
 */
export async function writeSnapshot(request: SnapshotRequest): Promise<WrittenSnapshot> {
  const snapshotId = newSnapshotId(request.date);
  const store = request.store ?? new FsSnapshotStore(request.snapshotDir);
  const compression = request.compression ?? 'none';
  let upload: SnapshotUpload | undefined;
  const ownSource = request.source ? undefined : new SourceDatabase(requireUrl(request.sourceDatabaseUrl), request.jobs);
  const sessions = new DumpSessions(request.source ?? ownSource!);
  const phases = new PhaseTimer();
  let watch: LockWatch | undefined;
  let blockedProduction: Error | undefined;
  let committing = false;
  let stopped: DumpStoppedError | undefined;
  // Ends the attempt as a failed worker does (sessions.abort): closing the connections cuts off the
  // statement in flight, a LOCK waiting for production included, and every session checks its client
  // once a second on PostgreSQL 14+ (client_connection_check_interval, postgres-pool.ts), so the
  // server ends it and releases the attempt's locks within about a second, without terminating it.
  const stop = () => {
    if (sessions.isAborted) return;
    stopped = new DumpStoppedError(`the app is stopping: the dump of ${request.date} ends here and nothing of it is kept`);
    sessions.abort(stopped);
    request.onStop?.();
  };
  request.signal?.addEventListener('abort', stop, { once: true });
  try {
    if (request.signal?.aborted) throw new DumpStoppedError(`the app is stopping: the dump of ${request.date} did not start`);
    const leader = await sessions.open();
    // The dump holds its locks until it commits: production waiting for one ends the attempt. The
    // watch starts before the first lock is taken (the LOCK itself may wait, holding the tables it
    // has locked already) and covers the whole attempt: the rules' preparation (full scans of
    // subsets and jsonb arrays) holds the locks as long as the COPYs do. Workers join as they open.
    watch = watchProductionLockWaits(request.source ?? ownSource!, [await backendPid(leader)], (error) => {
      // Ended already (a worker failed): nothing of this attempt holds a lock any more.
      if (sessions.isAborted) return false;
      blockedProduction = error;
      sessions.abort(error);
      return true;
    });
    const source = await serverIdentity(leader);
    const { tables, takenAt, role } = await openSnapshot(leader, request);
    const blocked = tables.filter((table) => table.filteredByPolicy);
    if (blocked.length) throw new RowSecurityError(blocked, role);
    // The strict gate and every other refusal of the rules happen here, before any file is written.
    const rules = request.rules ? await DumpRules.prepare(leader, request.rules, request.maskingKey, tables) : undefined;
    await rules?.prepareSession(leader);
    const sequences = await new TableCatalog(leader).readSequences(tables);
    // The whole database (no TABLES): every sequence, as pg_dump of a database sets them all.
    const standalone = request.tables.length === 0 ? await new TableCatalog(leader).readStandaloneSequences(tables) : undefined;
    if (standalone?.unreadable.length) {
      request.log?.(`left out sequence(s) the dump's role may not read (GRANT SELECT on them to set them in the environments): ${standalone.unreadable.join(', ')}`);
    }
    const files = new Map(tables.map((table, index) => [table, fileNameFor(index, table, compression)]));
    // Nothing is written before the checks above pass; from here on a failure aborts the upload.
    upload = await store.begin(snapshotId);

    // Extra connections adopt the leader's snapshot: every table is read at one instant.
    const jobs = Math.max(1, Math.min(request.jobs ?? 1, tables.length));
    const workers = [leader];
    if (jobs > 1) {
      const { rows } = await leader.query<{ id: string }>('SELECT pg_export_snapshot() AS id');
      for (let i = 1; i < jobs; i++) {
        const worker = await sessions.open();
        watch.add(await backendPid(worker));
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
    for (const table of tables) {
      if (table.localPartitions) request.log?.(`${formatQualifiedName(table)}: foreign partition(s) left out, as pg_dump leaves foreign data out: ${table.localPartitions.foreign.map(formatQualifiedName).join(', ')}`);
    }
    let firstError: { error: unknown } | undefined;
    try {
      // The first failure ends every session at once (their COPYs are cut off and the server
      // releases the attempt's locks); allSettled then waits for every file stream to close before
      // the directory is removed, and the first error is the one reported.
      await Promise.allSettled(
        workers.map(async (worker) => {
          for (let table = queue.shift(); table && !firstError; table = queue.shift()) {
            try {
              if (worker !== leader) await lockForWorker(worker, table);
              const result = await dumpTable(worker, table, upload!, files.get(table)!, compression, progress, rules);
              progress.addRows(result.rows);
              written.set(table, result);
            } catch (error) {
              if (!firstError) {
                firstError = { error };
                sessions.abort(error instanceof Error ? error : new Error(String(error)));
              }
              throw error;
            }
          }
        }),
      );
      if (firstError) throw firstError.error;
    } finally {
      progress.stop();
    }
    phases.mark('copy');
    await watch.stop();
    for (const worker of workers) await worker.query('COMMIT');
    // Read and committed: from here a stop lets the manifest complete the snapshot.
    request.signal?.removeEventListener('abort', stop);
    if (stopped) throw stopped;
    sessions.release();

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
      takenAt,
      tables: manifestTables,
      sequences,
      ...(standalone ? { standaloneSequences: standalone.sequences } : {}),
      ...(compression === 'gzip' ? { compression } : {}),
      ...(rules ? { rules: rules.manifest } : {}),
    };
    await request.beforeCommit?.(snapshotId);
    committing = true;
    // The manifest last: only a complete snapshot is ever taken for one.
    await upload.commit(Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`));
    phases.mark('manifest');
    request.log?.(`${snapshotId} phases: ${phases.toString()}`);
    return { manifest, location: upload.location };
  } catch (error) {
    // Stopped first: a wait production starts while this attempt cleans up is no reason it failed.
    await watch?.stop();
    sessions.abort(error instanceof Error ? error : new Error(String(error)));
    // The original error is what matters (a cleanup failure must not turn a transient error permanent).
    await upload?.abort();
    // What beforeCommit recorded of the snapshot goes with it.
    if (committing) await request.afterAbort?.(snapshotId).catch(() => undefined);
    // The sessions ended because production waited, or the app stopped: that, not their "connection
    // terminated", is why.
    throw blockedProduction ?? stopped ?? error;
  } finally {
    request.signal?.removeEventListener('abort', stop);
    await watch?.stop();
    await ownSource?.end();
  }
}

async function backendPid(session: PoolClient): Promise<number> {
  return (await session.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid;
}

function requireUrl(url: string | undefined): string {
  if (!url) throw new Error('writeSnapshot needs a source (or a sourceDatabaseUrl)');
  return url;
}
