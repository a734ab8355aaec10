import { DEFAULT_LOAD_MAINTENANCE_WORK_MEM_KB } from '@app/common/config';
import type { PoolClient } from 'pg';

/**
 * Settings for the load's transaction only (SET LOCAL: gone at its COMMIT or ROLLBACK).
 *
 * Index builds run serially with at least LOAD_MAINTENANCE_WORK_MEM to sort in (default 1GB, in kB:
 * pg_settings' unit): the loaded rows of a table sort in memory up to several million rows, in one
 * pass, with nothing written to temporary files. A
 * parallel build always spills (each worker writes its sorted run to disk for the leader to merge),
 * and next to the other environments' loads there are no idle cores for its workers: side by side
 * with three loads on two cores, the index phase took 0.45 s serially in 1 GB against 0.61 s in
 * parallel with 256 MB at pgbench scale 10, and 2.65 s against 3.71 s at scale 50
 * (bench/copy-probe.js, medians of 5 rounds). A larger maintenance_work_mem a DBA set for the role or
 * database is kept; the sort takes only the memory it needs. On a small environment server that
 * loads big tables, LOAD_MAINTENANCE_WORK_MEM lowers the floor (`minMaintenanceWorkMemKb`).
 */
export async function applyLoadSettings(client: Pick<PoolClient, 'query'>, minMaintenanceWorkMemKb: number = DEFAULT_LOAD_MAINTENANCE_WORK_MEM_KB): Promise<void> {
  await client.query(
    "SELECT set_config('maintenance_work_mem', GREATEST(setting::bigint, $1)::text || 'kB', true) FROM pg_settings WHERE name = 'maintenance_work_mem'",
    [minMaintenanceWorkMemKb],
  );
  await client.query('SET LOCAL max_parallel_maintenance_workers = 0');
  // A session idling in a transaction on the target must not stall the load forever: give up
  // (lock_not_available, retried as transient) instead of waiting behind it.
  await client.query("SET LOCAL lock_timeout = '60s'");
}

/**
 * JIT off for the load's catalog reads and preparation, in its transaction; returns what sets the
 * transaction back to the session's own setting for the data (COPY, index builds, foreign key
 * checks, refreshes keep the environment's setting, as pg_restore's would). The recursive catalog
 * queries (the NOT VALID checks over every type a column holds, partition trees) are estimated
 * far above jit_above_cost and run in milliseconds: PostgreSQL compiled the checks' query for about
 * 1.7 s on every load, where it ran in 17 ms (EXPLAIN ANALYZE in a pgbench environment), and each
 * load's prepare phase took 2.3-3.2 s in the stores bench where it takes about 0.1 s.
 */
export async function jitOffUntilData(client: Pick<PoolClient, 'query'>): Promise<() => Promise<void>> {
  const { rows } = await client.query<{ jit: string }>("SELECT current_setting('jit') AS jit, set_config('jit', 'off', true)");
  const own = rows[0].jit;
  return async () => {
    await client.query("SELECT set_config('jit', $1, true)", [own]);
  };
}
