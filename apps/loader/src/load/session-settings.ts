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
 * JIT off for the load's catalog reads and preparation (up to the TRUNCATE, the check of references
 * from outside included), in its transaction; returns what sets the transaction back to the
 * session's own setting for the data (from the COPY on: index builds, foreign key checks and
 * refreshes keep the environment's setting, as pg_restore's would). The recursive catalog
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

/**
 * The settings that decide what the database computes and how it prints values: a generated
 * column, a default, a CHECK or a trigger during the COPY, an expression index's rebuild, a
 * materialized view's refresh (`at::date`, `min(at)::text`) give other rows under another TimeZone,
 * DateStyle, IntervalStyle or extra_float_digits. pg_restore computes them under the database's
 * own settings; the load does too (ownSettingsForData).
 */
export const COMPUTING_SETTINGS = ['TimeZone', 'DateStyle', 'IntervalStyle', 'extra_float_digits'] as const;

/**
 * The environment's own COMPUTING_SETTINGS (`own`: what a plain session of the role has, read by
 * TargetDatabase.ownSettings) for the data phase, in the load's transaction: the COPY, index builds,
 * key validation and refreshes. Returns what sets the pinned values back (the ledger's row after).
 *
 * The CSV still reads as it was written under any of these: the dumper writes timestamptz and timetz
 * with their offsets, dates year first (ISO: read year first under every DateStyle, BC and 5-digit
 * years included), intervals in postgres style (an explicit sign on every field after a negative
 * one, which sql_standard's leading-sign rule leaves alone), and extra_float_digits changes only
 * output; snapshot-load.spec's "environment's own settings" test loads such values into a database
 * set to unusual ones. What does change how the CSV reads stays pinned: array_nulls, xmloption,
 * client_encoding. The catalog reads and the DDL the load writes from them are made under the
 * pinned values, and their constants (ISO dates, timestamptz with offsets) read the same here.
 */
export async function ownSettingsForData(client: Pick<PoolClient, 'query'>, own: Readonly<Record<string, string>>): Promise<() => Promise<void>> {
  const names = COMPUTING_SETTINGS.filter((name) => own[name] !== undefined);
  const { rows } = await client.query<{ name: string; pinned: string }>(
    'SELECT name, current_setting(name) AS pinned, set_config(name, value, true) FROM unnest($1::text[], $2::text[]) AS s(name, value)',
    [names, names.map((name) => own[name])],
  );
  return async () => {
    await client.query('SELECT set_config(name, value, true) FROM unnest($1::text[], $2::text[]) AS s(name, value)', [rows.map((r) => r.name), rows.map((r) => r.pinned)]);
  };
}
