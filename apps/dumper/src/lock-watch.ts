import { setTimeout as sleep } from 'node:timers/promises';
import type { PoolClient } from 'pg';
import type { DumpSessionSource } from './source-database';

/** How often production's lock waits are looked at while a dump holds its locks. */
export const LOCK_WATCH_INTERVAL_MS = 1_000;
/** How long stop() waits for a query of the watch's that is under way. */
const STOP_WAIT_MS = 5_000;

export interface LockWatch {
  /** Watches one more session of the dump's (a worker, as it opens), before it takes any lock. */
  add(pid: number): void;
  /** Stops watching and hands the watch's session back. */
  stop(): Promise<void>;
}

/**
 * Ends a dump attempt as soon as a session in production waits for a table lock the dump holds
 * (DDL, TRUNCATE, LOCK TABLE). The dump keeps its ACCESS SHARE locks until its transaction ends, as
 * pg_dump does: without this, an ALTER TABLE on a table already dumped (or on any table, with one
 * connection) waited for the rest of the dump, and every query on that table queued behind it.
 * Workers catch such a wait on the table they are about to read (NOWAIT); this catches it on every
 * table, once a second. `onBlocked` gets a 55P03 error naming the tables (transient: the attempt is
 * retried after RETRY_DELAY, by when the DDL is through). Only waits for relation locks count: a
 * CREATE INDEX CONCURRENTLY waiting for the dump's snapshot to end blocks no query.
 *
 * The watch starts before the dump takes its first lock (with the leader's pid; workers are added as
 * they open), so it covers every moment the dump holds a lock, the rules' preparation included: a
 * subset's closure or a scan of jsonb arrays holds the locks for minutes on a large table before any
 * COPY. On a wait it ends the attempt and then terminates the dump's sessions on the server, which
 * would otherwise go on with a query under way (and its locks) after their connections closed.
 *
 * Best effort: a watch that cannot connect or query stops watching; the dump goes on as before.
 */
export function watchProductionLockWaits(source: DumpSessionSource, pids: number[], onBlocked: (error: Error) => boolean, intervalMs = LOCK_WATCH_INTERVAL_MS): LockWatch {
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
        const { rows } = await session.query<{ relation: string; at: Date }>(
          // Only ungranted relation locks reach pg_blocking_pids (OFFSET 0 keeps the filter first):
          // it takes the lock manager's locks, so it runs for the few sessions that wait, if any.
          `SELECT DISTINCT format('%I.%I', n.nspname, c.relname) AS relation, statement_timestamp() AS at
             FROM (SELECT pid, relation FROM pg_locks WHERE NOT granted AND locktype = 'relation' AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) OFFSET 0) w
             JOIN pg_class c ON c.oid = w.relation JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE pg_blocking_pids(w.pid) && $1::int[]
            ORDER BY 1`,
          [watched],
        );
        // A dump that finished copying while this ran is not thrown away for it.
        if (rows.length && !stopped) {
          const tables = rows.map((row) => row.relation).join(', ');
          const ended = onBlocked(
            Object.assign(
              new Error(`a session in production waits for a lock this dump holds on ${tables} (DDL or TRUNCATE): this attempt ends and lets it through`),
              { code: '55P03' },
            ),
          );
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
