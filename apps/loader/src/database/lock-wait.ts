import type { Queryable } from './queryable';

/** SQLSTATE of a lock wait that outlasted lock_timeout. */
export const LOCK_NOT_AVAILABLE = '55P03';

/** The longest a lock is waited for at a time before looking whether the app is stopping. */
export const WAIT_SLICE_MS = 1_000;

export interface SlicedLockWait {
  /** The savepoint each slice runs under (an SQL identifier, one per kind of wait). */
  savepoint: string;
  /** The app stopping: the wait ends after the slice under way (at most WAIT_SLICE_MS). */
  signal?: AbortSignal;
  /**
   * `session`: give up once the session's lock_timeout has passed, as one LOCK statement would (a
   * lock_timeout of 0 waits as long as it takes, as PostgreSQL's does). `none`: wait until the lock
   * is granted or `signal` ends the wait.
   */
  bound: 'session' | 'none';
  /** When the wait began (Date.now()), for one that goes on from an earlier one: the bound counts from there. */
  startedAt?: number;
  /** After each slice that timed out, the transaction usable again: how long the wait has lasted. */
  onSlice?: (wait: { waitedMs: number; sessionMs: number }) => Promise<void> | void;
  /**
   * The error the wait ends with when it gives up (the transaction usable again); by default the
   * last slice's own (55P03). Keep SQLSTATE 55P03: it is transient, so the load is retried.
   */
  giveUp?: (why: 'stopped' | 'timed-out', waitedMs: number, error: Error) => Promise<Error> | Error;
}

/** The session's lock_timeout in ms (0: none). */
export async function sessionLockTimeoutMs(db: Queryable): Promise<number> {
  const { rows } = await db.query<{ ms: number }>("SELECT setting::int AS ms FROM pg_settings WHERE name = 'lock_timeout'");
  return rows[0].ms;
}

/**
 * Runs `lockSql` (a LOCK TABLE) in the caller's transaction, waiting for the lock in slices of at
 * most WAIT_SLICE_MS: each slice runs under a savepoint with its own short lock_timeout, and a slice
 * that times out is rolled back to the savepoint (the transaction stays usable, the slice's setting
 * is undone) before `signal` is looked at. One LOCK under the session's 60 s lock_timeout could not
 * be ended by a stopping app: a SIGTERM took up to a minute, past docker's grace period. Once the
 * lock is taken, the rest of the transaction keeps the session's lock_timeout.
 */
export async function lockInSlices(db: Queryable, lockSql: string, wait: SlicedLockWait): Promise<void> {
  const sessionMs = await sessionLockTimeoutMs(db);
  const boundMs = wait.bound === 'session' && sessionMs > 0 ? sessionMs : undefined;
  const started = wait.startedAt ?? Date.now();
  for (;;) {
    const waitedMs = Date.now() - started;
    // The last slice only for what is left of the bound, so the whole wait stays within it.
    const sliceMs = Math.max(1, Math.ceil(Math.min(sessionMs || WAIT_SLICE_MS, WAIT_SLICE_MS, boundMs === undefined ? Infinity : boundMs - waitedMs)));
    await db.query(`SAVEPOINT ${wait.savepoint}`);
    try {
      await db.query("SELECT set_config('lock_timeout', $1, true)", [`${sliceMs}ms`]);
      await db.query(lockSql);
      await db.query("SELECT set_config('lock_timeout', $1, true)", [`${sessionMs}ms`]);
      await db.query(`RELEASE SAVEPOINT ${wait.savepoint}`);
      return;
    } catch (error) {
      if ((error as { code?: unknown }).code !== LOCK_NOT_AVAILABLE) throw error;
      // Also undoes the slice's lock_timeout.
      await db.query(`ROLLBACK TO SAVEPOINT ${wait.savepoint}`);
      const now = Date.now() - started;
      const why = wait.signal?.aborted ? 'stopped' : boundMs !== undefined && now >= boundMs ? 'timed-out' : undefined;
      if (why) throw wait.giveUp ? await wait.giveUp(why, now, error as Error) : error;
      await wait.onSlice?.({ waitedMs: now, sessionMs });
    }
  }
}
