import { LEDGER_SCHEMA, type LoadDrift } from '@app/common/contract';
import { lockInSlices } from './database/lock-wait';
import type { Queryable } from './database/queryable';

/**
 * A small table in the target recording which snapshots it holds. Written in the load's own
 * transaction, so "in the ledger" means "committed": a redelivered snapshot is recognised and acked
 * without loading again.
 */
export { LEDGER_SCHEMA };
export const LEDGER_TABLE = `${LEDGER_SCHEMA}.loaded_snapshots`;

export interface LedgerEntry {
  snapshotId: string;
  rows: number;
  durationMs: number;
  attempts: number;
  /** When the load committed (`loaded_at`, ISO 8601): what announcing it later says (snapshot.loaded's `loadedAt`). */
  loadedAt: string;
  announced: boolean;
  /** SCHEMA_DRIFT=common-columns: what the load left out, so that announcing it later still says so. */
  drift?: LoadDrift;
  /** A `db-fanout reload` loaded it: the stream sequence of that request, so a redelivery of it is not a second reload. */
  reloadSeq?: number;
}

export interface LedgerRecord extends Omit<LedgerEntry, 'announced' | 'loadedAt'> {
  date: string;
  createdAt: string;
  /** The instant the snapshot's data was taken (snapshotInstant): what "never back in time" compares. */
  takenAt: string;
  environment: string;
}

/**
 * What losing a concurrent `CREATE ... IF NOT EXISTS` or `ADD COLUMN` race raises: unique_violation
 * (a catalog index), duplicate_schema, duplicate_table, duplicate_column, and duplicate_object
 * (42710, `type "loaded_snapshots" already exists`: the table's row type; seen once in CI).
 */
const DUPLICATE_OBJECT_CODES = new Set(['23505', '42P06', '42P07', '42701', '42710']);

/** Columns added after the first release, with their types: ledgers created before get them at startup. */
const ADDED_COLUMNS: ReadonlyArray<[string, string]> = [
  ['snapshot_created_at', 'timestamptz'],
  ['snapshot_taken_at', 'timestamptz'],
  ['drift', 'jsonb'],
  ['reload_seq', 'bigint'],
];

/** The ledger's statements, run on the pool (migration, marking) or on a load's own client. */
export class LedgerRepository {
  constructor(private readonly db: Queryable) {}

  /**
   * Creates or upgrades the ledger. Run once per process (at startup, or before the first load when
   * the target was down then), never per load: ALTER TABLE takes an exclusive lock even when the
   * column exists, so a column is only added when the catalog says it is missing. Another replica
   * migrating at the same moment is fine: losing that race is ignored.
   */
  async migrate(): Promise<void> {
    await this.createIfMissing(`CREATE SCHEMA IF NOT EXISTS ${LEDGER_SCHEMA}`);
    await this.createIfMissing(
      `CREATE TABLE IF NOT EXISTS ${LEDGER_TABLE} (
        snapshot_id  text PRIMARY KEY,
        snapshot_date date NOT NULL,
        environment  text NOT NULL,
        rows         bigint NOT NULL,
        duration_ms  bigint NOT NULL,
        attempts     int NOT NULL,
        loaded_at    timestamptz NOT NULL DEFAULT now(),
        announced_at timestamptz,
        snapshot_created_at timestamptz,
        snapshot_taken_at timestamptz,
        drift        jsonb,
        reload_seq   bigint
      )`,
    );
    const { rows } = await this.db.query<{ name: string }>(
      `SELECT attname AS name FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped`,
      [LEDGER_TABLE],
    );
    const present = new Set(rows.map((r) => r.name));
    for (const [column, type] of ADDED_COLUMNS) {
      if (!present.has(column)) await this.createIfMissing(`ALTER TABLE ${LEDGER_TABLE} ADD COLUMN IF NOT EXISTS ${column} ${type}`);
    }
  }

  /** Whether the ledger's table exists (nothing is created). */
  async exists(): Promise<boolean> {
    const { rows } = await this.db.query<{ present: boolean }>('SELECT to_regclass($1) IS NOT NULL AS present', [LEDGER_TABLE]);
    return rows[0].present;
  }

  /** The load that left the target as it is (the latest committed): when its data was taken, and when it was loaded. */
  async latestLoad(): Promise<{ takenAt: string; loadedAtMs: number } | undefined> {
    const { rows } = await this.db.query<{ taken_at: Date | null; loaded_at: Date }>(
      `SELECT coalesce(snapshot_taken_at, snapshot_created_at) AS taken_at, loaded_at FROM ${LEDGER_TABLE} ORDER BY loaded_at DESC LIMIT 1`,
    );
    const row = rows[0];
    return row?.taken_at ? { takenAt: row.taken_at.toISOString(), loadedAtMs: row.loaded_at.getTime() } : undefined;
  }

  /**
   * The newest snapshot this target holds, if its data was taken after `takenAt`: loading an older
   * snapshot over it (a retry or redelivery that lost a race) would move the environment back in time.
   */
  async newerLoadedSnapshot(takenAt: string): Promise<string | undefined> {
    const { rows } = await this.db.query<{ snapshot_id: string }>(
      `SELECT snapshot_id FROM ${LEDGER_TABLE}
        WHERE coalesce(snapshot_taken_at, snapshot_created_at) > $1
        ORDER BY coalesce(snapshot_taken_at, snapshot_created_at) DESC LIMIT 1`,
      [takenAt],
    );
    return rows[0]?.snapshot_id;
  }

  /**
   * Serialises loads into one target (SHARE ROW EXCLUSIVE conflicts with itself), for the rest of the
   * transaction: two loads racing each other would otherwise both truncate and the loser would fail.
   * Only another load (or someone writing the ledger by hand) holds it, so the wait is not bounded
   * by the session's lock_timeout: a reload asked for during an hour-long daily load waits for it
   * rather than fail after its retries. Each timeout rolls back to a savepoint, reports who holds
   * the lock (`onWait`) and waits again, until `signal` (the app stopping) ends the wait.
   */
  async lock({ onWait, signal }: { onWait?: (holders: string) => void; signal?: AbortSignal } = {}): Promise<void> {
    // Waited in slices of at most a second (lockInSlices), so that a stopping app leaves the wait at
    // once; who holds the lock is still reported once per lock_timeout.
    let reportedMs = 0;
    await lockInSlices(this.db, `LOCK TABLE ${LEDGER_TABLE} IN SHARE ROW EXCLUSIVE MODE`, {
      savepoint: 'db_fanout_ledger_lock',
      signal,
      bound: 'none',
      onSlice: async ({ waitedMs, sessionMs }) => {
        if (waitedMs - reportedMs < (sessionMs || 60_000)) return;
        reportedMs = waitedMs;
        onWait?.(await this.lockHolders());
      },
    });
  }

  /** The sessions holding or queued for the ledger's lock ahead of this one: pid, application, state, since when. */
  private async lockHolders(): Promise<string> {
    const { rows } = await this.db.query<{ holder: string }>(
      `SELECT format('pid %s (%s, %s since %s)', a.pid, coalesce(nullif(a.application_name, ''), 'no application_name'), a.state, date_trunc('second', a.xact_start)) AS holder
         FROM pg_locks l JOIN pg_stat_activity a USING (pid)
        WHERE l.relation = '${LEDGER_TABLE}'::regclass AND l.granted AND l.pid <> pg_backend_pid()
        ORDER BY a.xact_start`,
    );
    return rows.map((row) => row.holder).join('; ') || 'a session that has let it go since';
  }

  async find(snapshotId: string): Promise<LedgerEntry | undefined> {
    const { rows } = await this.db.query<{ rows: string; duration_ms: string; attempts: number; loaded_at: Date; announced: boolean; drift: LoadDrift | null; reload_seq: string | null }>(
      `SELECT rows, duration_ms, attempts, loaded_at, announced_at IS NOT NULL AS announced, drift, reload_seq FROM ${LEDGER_TABLE} WHERE snapshot_id = $1`,
      [snapshotId],
    );
    const row = rows[0];
    return (
      row && {
        snapshotId,
        rows: Number(row.rows),
        durationMs: Number(row.duration_ms),
        attempts: row.attempts,
        loadedAt: row.loaded_at.toISOString(),
        announced: row.announced,
        ...(row.drift ? { drift: row.drift } : {}),
        ...(row.reload_seq !== null ? { reloadSeq: Number(row.reload_seq) } : {}),
      }
    );
  }

  async record(entry: LedgerRecord): Promise<void> {
    await this.db.query(
      // loaded_at: when the load finished its work (recorded last, just before COMMIT), not when its
      // transaction began (now()), which is before the wait for the lock and every COPY.
      `INSERT INTO ${LEDGER_TABLE} (snapshot_id, snapshot_date, snapshot_created_at, snapshot_taken_at, environment, rows, duration_ms, attempts, drift, reload_seq, loaded_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, clock_timestamp())`,
      [
        entry.snapshotId,
        entry.date,
        entry.createdAt,
        entry.takenAt,
        entry.environment,
        entry.rows,
        entry.durationMs,
        entry.attempts,
        entry.drift ? JSON.stringify(entry.drift) : null,
        entry.reloadSeq ?? null,
      ],
    );
  }

  /** Set once snapshot.loaded is stored in the stream, so a redelivery announces only what was never announced. */
  async markAnnounced(snapshotId: string): Promise<void> {
    await this.db.query(`UPDATE ${LEDGER_TABLE} SET announced_at = now() WHERE snapshot_id = $1`, [snapshotId]);
  }

  /** A reload replaces the snapshot's ledger row (in the load's transaction, so a failed reload keeps it). */
  async forget(snapshotId: string): Promise<void> {
    await this.db.query(`DELETE FROM ${LEDGER_TABLE} WHERE snapshot_id = $1`, [snapshotId]);
  }

  /** Runs DDL that another replica may be running at the same moment: losing that race is fine. */
  private async createIfMissing(sql: string): Promise<void> {
    try {
      await this.db.query(sql);
    } catch (error) {
      if (!DUPLICATE_OBJECT_CODES.has((error as { code?: string }).code ?? '')) throw error;
    }
  }
}
