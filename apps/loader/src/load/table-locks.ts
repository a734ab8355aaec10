import { quoteQualified } from '@app/common/database';
import { LOCK_NOT_AVAILABLE, lockInSlices } from '../database/lock-wait';
import type { Queryable } from '../database/queryable';
import type { TargetTable } from '../target-schema';

/** A wait for the snapshot's tables that lasts this long is logged once, naming who holds them. */
export const SLOW_TABLE_LOCK_MS = 10_000;

export interface TableLockWait {
  /** The app stopping: the wait ends within about a second (the load rolls back, the message is handed back). */
  signal?: AbortSignal;
  /** Said once when the wait has lasted SLOW_TABLE_LOCK_MS. */
  log?: (line: string) => void;
  /** When the load began waiting for its tables (Date.now()): a second wait goes on within the same bound. */
  startedAt?: number;
}

/** A table the load locks: the snapshot's, or one outside it at the other end of a foreign key. */
export interface LockedTable {
  oid: number;
  partitioned: boolean;
  /** Schema-qualified, quoted as needed. */
  name: string;
}

/**
 * ACCESS EXCLUSIVE on every snapshot table, and on every table outside the snapshot at the other end
 * of one of their foreign keys, in one statement, in a fixed order (by oid, so two loads or a load
 * and a migration meet them in the same order): the lock the load's DDL and TRUNCATE take anyway,
 * taken before the catalog they replay is read. A weaker lock first (to keep the tables readable a
 * little longer) would be upgraded later, and an app transaction that read a table and then writes
 * it would deadlock with the load. Ordinary tables ONLY, as they are truncated (their inheritance
 * children are not the load's); a partitioned table with its partitions, which are loaded through it.
 *
 * The outside tables are those whose keys the load drops and re-adds (dropForeignKeys): ALTER TABLE ...
 * DROP CONSTRAINT of a foreign key takes ACCESS EXCLUSIVE on the referencing table and on the
 * referenced one alike. Taken later, one by one, that wait had neither the slices nor the bound
 * below: an app transaction that had read such a table kept every snapshot table locked (and its
 * readers waiting) for the whole lock_timeout, a stop included, and the error named nothing. In the
 * same statement as the snapshot's tables, a slice that times out lets all of them go again, so an
 * app waiting for one of the tables meanwhile goes on (no deadlock held for the whole wait), and the
 * order stays the one fixed order. A referenced table the role may not lock (neither UPDATE, DELETE
 * nor TRUNCATE, where REFERENCES suffices for the key) is left to the DROP CONSTRAINT, as before.
 *
 * Waited for in one-second slices (lockInSlices), so a stopping app ends the wait within about a
 * second, and for no longer than the session's lock_timeout (60 s) in all, as one LOCK was. A wait
 * that runs out fails with SQLSTATE 55P03 (transient: the load is retried) naming the tables held
 * and the sessions holding them; one that lasts SLOW_TABLE_LOCK_MS says so once in the log.
 */
export async function lockAgainstChanges(client: Queryable, targets: TargetTable[], { signal, log, startedAt }: TableLockWait = {}): Promise<void> {
  if (!targets.length) return;
  const snapshot = targets.map((t) => ({ oid: t.oid, partitioned: t.partitioned, name: quoteQualified({ schema: t.manifest.schema, name: t.manifest.table }) }));
  const ordered = [...snapshot, ...(await outsideTables(client, targets))].sort((a, b) => a.oid - b.oid);
  const names = ordered.map((t) => (t.partitioned ? '' : 'ONLY ') + t.name);
  let logged = false;
  await lockInSlices(client, `LOCK TABLE ${names.join(', ')} IN ACCESS EXCLUSIVE MODE`, {
    savepoint: 'db_fanout_table_locks',
    signal,
    bound: 'session',
    startedAt,
    onSlice: async ({ waitedMs, sessionMs }) => {
      if (logged || waitedMs < SLOW_TABLE_LOCK_MS) return;
      logged = true;
      // The loader's log adds `into <environment>` to the line.
      const limit = sessionMs ? `giving up after lock_timeout (${seconds(sessionMs)})` : 'no lock_timeout, so waiting as long as it takes,';
      log?.(`waiting ${seconds(waitedMs)} for ACCESS EXCLUSIVE locks on ${await tableLockHolders(client, ordered)}; ${limit} on the load`);
    },
    giveUp: async (why, waitedMs, error) => {
      const held = await tableLockHolders(client, ordered);
      const message =
        why === 'stopped'
          ? `the app is stopping: gave up waiting (${seconds(waitedMs)}) for ACCESS EXCLUSIVE locks on ${held}`
          : `waited ${seconds(waitedMs)} (lock_timeout) for ACCESS EXCLUSIVE locks on ${held}`;
      // Keeps the SQLSTATE: 55P03 is transient (retried), and a stop's own doing (handed back).
      return Object.assign(new Error(message, { cause: error }), { code: LOCK_NOT_AVAILABLE });
    },
  });
}

/**
 * The tables outside the snapshot (and outside its partitioned tables' partitions) at the other end
 * of a foreign key the load drops and re-adds: the keys TargetCatalog.foreignKeysTouching lists.
 */
async function outsideTables(client: Queryable, targets: TargetTable[]): Promise<LockedTable[]> {
  const { rows } = await client.query<LockedTable>(
    `WITH snapshot AS (SELECT r.oid AS relid FROM unnest($1::oid[]) r(oid) UNION SELECT tree.relid FROM unnest($1::oid[]) r(oid), pg_partition_tree(r.oid) tree),
          other AS (
            SELECT con.confrelid AS relid, false AS referencing FROM pg_constraint con WHERE con.contype = 'f' AND con.conparentid = 0 AND con.conrelid = ANY($1::oid[])
            UNION ALL
            SELECT con.conrelid, true FROM pg_constraint con WHERE con.contype = 'f' AND con.conparentid = 0 AND con.confrelid = ANY($1::oid[])
          )
     SELECT c.oid::int AS oid, c.relkind = 'p' AS partitioned, format('%I.%I', n.nspname, c.relname) AS name
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.oid IN (SELECT relid FROM other) AND c.oid NOT IN (SELECT relid FROM snapshot)
        -- The role owns a referencing table (it alters it); a referenced one it may only reference.
        AND (c.oid IN (SELECT relid FROM other WHERE referencing) OR has_table_privilege(c.oid, 'UPDATE, DELETE, TRUNCATE'))`,
    [targets.map((t) => t.oid)],
  );
  return rows;
}

/**
 * Which of the tables other sessions hold or are queued for, and who: every lock mode conflicts with
 * ACCESS EXCLUSIVE, so these are the sessions pg_blocking_pids names while the load waits (between
 * two slices the load itself waits for nothing, so it is asked of pg_locks). A partitioned table's
 * partitions count, as LOCK TABLE takes them too. Pid, application_name, user, state and since when:
 * never the query, which may quote production's values or a secret.
 */
export async function tableLockHolders(client: Queryable, targets: LockedTable[]): Promise<string> {
  const { rows } = await client.query<{ pid: number | null; application: string | null; usename: string | null; state: string | null; since: string | null; held: string[] | null; queued: string[] | null }>(
    `WITH locked AS (
       SELECT t.oid FROM unnest($1::oid[]) AS t(oid)
       UNION SELECT p.relid FROM unnest($2::oid[]) AS r(oid), pg_partition_tree(r.oid::regclass) AS p
     )
     SELECT l.pid, a.application_name AS application, a.usename, a.state, date_trunc('second', a.xact_start)::text AS since,
            array_agg(DISTINCT format('%I.%I', n.nspname, c.relname)) FILTER (WHERE l.granted) AS held,
            array_agg(DISTINCT format('%I.%I', n.nspname, c.relname)) FILTER (WHERE NOT l.granted) AS queued
       FROM pg_locks l JOIN locked ON locked.oid = l.relation
       JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
       LEFT JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'relation' AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND l.pid IS DISTINCT FROM pg_backend_pid()
      GROUP BY l.pid, a.application_name, a.usename, a.state, a.xact_start
      ORDER BY a.xact_start NULLS LAST, l.pid`,
    [targets.map((t) => t.oid), targets.filter((t) => t.partitioned).map((t) => t.oid)],
  );
  const tables = new Set(rows.flatMap((row) => [...(row.held ?? []), ...(row.queued ?? [])]));
  if (!rows.length) return `${targets.map((t) => t.name).join(', ')} (the sessions that held them have let them go since)`;
  const sessions = rows.map((row) => {
    const who =
      row.pid === null
        ? 'a prepared transaction (pg_prepared_xacts)'
        : `pid ${row.pid} (${row.application || 'no application_name'}, user ${row.usename ?? 'unknown'}, ${row.state ?? 'state not visible to this role'}${row.since ? ` since ${row.since}` : ''})`;
    const what = [row.held?.length ? `holds ${row.held.join(', ')}` : '', row.queued?.length ? `is queued for ${row.queued.join(', ')}` : ''].filter(Boolean).join(' and ');
    return `${who} ${what}`;
  });
  return `${[...tables].sort().join(', ')}: ${sessions.join('; ')}`;
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}
