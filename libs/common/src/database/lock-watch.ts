import { setTimeout as sleep } from 'node:timers/promises';
import type { PoolClient } from 'pg';

/** How often production's lock waits are looked at while a dump holds its locks. */
export const LOCK_WATCH_INTERVAL_MS = 1_000;
/** How long stop() waits for a query of the watch's that is under way. */
const STOP_WAIT_MS = 5_000;
/** How far a chain of waits is followed from a session waiting for a table (a waits for b waits for ...). */
const MAX_CHAIN = 8;

/** Where the watch gets its one session: the dumper's pool, the CLI's, or a test's wrapper. */
export interface LockWatchSource {
  connect(): Promise<PoolClient>;
}

/** Who holds the locks, for the watch's error: the dump's wording unless a caller (the CLI's check) has its own. */
export interface LockWatchWording {
  /** e.g. `this dump`. */
  holder: string;
  /** What happens now, e.g. `this attempt ends and lets it through`. */
  outcome: string;
}

export const DUMP_LOCK_WATCH_WORDING: LockWatchWording = { holder: 'this dump', outcome: 'this attempt ends and lets it through' };

/**
 * The tables production waits for because of the watched sessions ($1), and whether a waiter on
 * each is blocked by one of them directly. The chain starts only at sessions waiting for a relation
 * lock in this database (pg_blocking_pids takes the lock manager's locks, so it runs for the few
 * sessions that wait, if any), and goes on only through blockers that wait themselves, none of them
 * watched: a chain of one step costs what the direct check did. pg_locks is read once.
 */
const LOCK_WAITS_SQL = `
WITH RECURSIVE waits AS MATERIALIZED (
  SELECT pid, locktype, database, relation FROM pg_locks WHERE NOT granted
), chain(relation, blocker, direct, depth) AS (
  SELECT w.relation, b.pid, true, 1
    FROM waits w CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS b(pid)
   WHERE w.locktype = 'relation' AND w.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  UNION
  SELECT c.relation, b.pid, false, c.depth + 1
    FROM chain c CROSS JOIN LATERAL unnest(pg_blocking_pids(c.blocker)) AS b(pid)
   WHERE c.depth < ${MAX_CHAIN} AND c.blocker <> ALL($1::int[]) AND c.blocker IN (SELECT pid FROM waits)
)
SELECT format('%I.%I', n.nspname, t.relname) AS relation, bool_or(c.direct) AS direct, statement_timestamp() AS at
  FROM chain c JOIN pg_class t ON t.oid = c.relation JOIN pg_namespace n ON n.oid = t.relnamespace
 WHERE c.blocker = ANY($1::int[])
 GROUP BY 1
 ORDER BY 1`;

export interface LockWatch {
  /** Watches one more session of the dump's (a worker, as it opens), before it takes any lock. */
  add(pid: number): void;
  /** Stops watching and hands the watch's session back. */
  stop(): Promise<void>;
}

/**
 * Ends a dump attempt as soon as a session in production waits for a table lock because of the
 * dump (DDL, TRUNCATE, LOCK TABLE). The dump keeps its ACCESS SHARE locks until its transaction
 * ends, as pg_dump does: without this, an ALTER TABLE on a table already dumped (or on any table,
 * with one connection) waited for the rest of the dump, and every query on that table queued
 * behind it. Workers catch such a wait on the table they are about to read (NOWAIT); this catches it
 * on every table, once a second. `onBlocked` gets a 55P03 error naming the tables (transient: the
 * attempt is retried after RETRY_DELAY, by when the DDL is through).
 *
 * A wait counts when its chain of blockers reaches a session of the dump's, directly or through
 * other waiting sessions and any kind of lock: a CREATE INDEX CONCURRENTLY waits for the dump's
 * snapshot to end (a virtualxid lock) while it holds SHARE UPDATE EXCLUSIVE on its table, a DDL
 * that conflicts with that (a foreign key to the table, a trigger, a plain CREATE INDEX) queues
 * behind the CIC, and the app's writes queue behind the DDL: nobody waited for the dump directly,
 * and all of them waited for the whole dump. Only sessions waiting for a table lock start a chain:
 * a CIC alone waiting for the dump's snapshot blocks no query and does not count.
 *
 * The watch starts before the dump takes its first lock (with the leader's pid; workers are added as
 * they open), so it covers every moment the dump holds a lock, the rules' preparation included: a
 * subset's closure or a scan of jsonb arrays holds the locks for minutes on a large table before any
 * COPY. On a wait it ends the attempt and then terminates the dump's sessions on the server, which
 * would otherwise go on with a query under way (and its locks) after their connections closed.
 * `db-fanout rules check` runs the same scans on production and is watched the same way.
 *
 * Best effort: a watch that cannot connect or query stops watching; the dump goes on as before.
 */
export function watchProductionLockWaits(
  source: LockWatchSource,
  pids: number[],
  onBlocked: (error: Error) => boolean,
  intervalMs = LOCK_WATCH_INTERVAL_MS,
  wording: LockWatchWording = DUMP_LOCK_WATCH_WORDING,
): LockWatch {
  const watched = [...pids];
  let stopped = false;
  let wake: (() => void) | undefined;
  let session: PoolClient | undefined;
  let released = false;
  // Once: by the loop when it ends, or by stop() when a query of the watch's does not end in time.
  const release = (error?: Error) => {
    if (released || !session) return;
    released = true;
    session.release(error);
  };

  const loop = (async () => {
    try {
      session = await source.connect();
      while (!stopped) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, intervalMs);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        if (stopped) break;
        const { rows } = await session.query<{ relation: string; direct: boolean; at: Date }>(LOCK_WAITS_SQL, [watched]);
        // A dump that finished copying while this ran is not thrown away for it.
        if (rows.length && !stopped) {
          const ended = onBlocked(Object.assign(new Error(blockedMessage(rows, wording)), { code: '55P03' }));
          // Closing the dump's connections (onBlocked) is not enough: a backend inside a long query
          // (the rules' scans before any COPY) or waiting for a lock notices that its client is gone
          // only when it next writes to it, and keeps the locks until then. So the watch ends them
          // (a role may end its own sessions), after the dump has let go of them: never while one of
          // its connections could still report the termination as an error of its own. Only backends
          // that started before this check: never a session that took over a pid just freed. Not at
          // all when the attempt had ended already (onBlocked says so: a worker failed first): its
          // sessions went before this check, and a pid freed then may be another session's now.
          if (ended) await session.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = ANY($1::int[]) AND backend_start < $2', [watched, rows[0].at]);
          break;
        }
      }
      release();
    } catch (error) {
      // Watching is a courtesy to production; the dump itself does not depend on it. A session
      // that failed is not handed back to the pool for another use.
      release(error instanceof Error ? error : new Error(String(error)));
    }
  })();

  return {
    add: (pid: number) => {
      watched.push(pid);
    },
    stop: async () => {
      stopped = true;
      wake?.();
      // A query stuck on a dead connection must not hold the dump's end: its session is dropped.
      // The timer goes as soon as the loop ends: left running, it kept the process (a CLI, a test
      // runner) alive for STOP_WAIT_MS after every dump.
      const timer = new AbortController();
      const ended = await Promise.race([loop.then(() => true), sleep(STOP_WAIT_MS, false, { signal: timer.signal }).catch(() => false)]);
      timer.abort();
      if (!ended) release(new Error('the lock watch was stopped while its query had not returned'));
    },
  };
}

/** The tables named as waited for because of the holder, directly (its own locks) or behind a session that waits for it. */
function blockedMessage(rows: { relation: string; direct: boolean }[], wording: LockWatchWording): string {
  const direct = rows.filter((row) => row.direct).map((row) => row.relation);
  const behind = rows.filter((row) => !row.direct).map((row) => row.relation);
  const waits = [
    direct.length ? `waits for a lock ${wording.holder} holds on ${direct.join(', ')} (DDL or TRUNCATE)` : undefined,
    behind.length ? `waits for a lock on ${behind.join(', ')} behind a session that waits for ${wording.holder} (such as a CREATE INDEX CONCURRENTLY waiting for its snapshot to end)` : undefined,
  ].filter((part) => part);
  return `a session in production ${waits.join(', and one ')}: ${wording.outcome}`;
}
