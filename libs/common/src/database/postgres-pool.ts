import { Client, Pool, type PoolConfig } from 'pg';

/**
 * Session settings every db-fanout connection pins, on both sides, so that what a session reads and
 * writes never depends on a role's or database's own defaults (`ALTER ROLE ... SET DateStyle = 'SQL,
 * DMY'` would otherwise swap day and month in a CSV silently). Sent in the startup packet
 * (`options`), so they cost no round trip and hold for every session a pool opens.
 */
export const PINNED_SESSION_SETTINGS: Readonly<Record<string, string>> = {
  DateStyle: 'ISO, MDY',
  IntervalStyle: 'postgres',
  TimeZone: 'UTC',
  extra_float_digits: '3',
  standard_conforming_strings: 'on',
  client_encoding: 'UTF8',
  // A database with array_nulls off reads the CSV's {x,NULL} as the string 'NULL' (or fails an
  // int[] column); one with xmloption document refuses xml content fragments that production holds.
  // pg_dump pins both for its restore.
  array_nulls: 'on',
  xmloption: 'content',
  statement_timeout: '0',
  idle_in_transaction_session_timeout: '0',
  // A database that defaults to REPEATABLE READ would let a load's checks after a lock wait read
  // the snapshot from before it (a second replica then loaded the same snapshot again). Transactions
  // that need more say so (the dump's BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY).
  default_transaction_isolation: 'read committed',
};

/** A dead peer or a half-open connection surfaces within about a minute, not the OS default of two hours. */
export const KEEPALIVE_INITIAL_DELAY_MS = 30_000;

export interface PostgresPoolOptions {
  /** Shown in pg_stat_activity, e.g. `db-fanout-loader`. */
  applicationName: string;
  /** Every session gives up waiting for a lock after this long (SQLSTATE 55P03, retried as transient). */
  lockTimeoutMs: number;
  /** Extra settings for this side, e.g. `{ row_security: 'off' }` for the dumper. */
  settings?: Record<string, string>;
  max?: number;
  connectionTimeoutMillis?: number;
}

/**
 * What the dumper's sessions add to the pinned settings on the source: row-level security off, so a
 * role that a policy would filter fails loudly instead of dumping a silent subset (as pg_dump does).
 * `db-fanout rules check` reads the source the same way.
 */
export const DUMP_SOURCE_SETTINGS: Readonly<Record<string, string>> = { row_security: 'off' };

/** `-c name=value` pairs for the startup packet; backslash-escapes what libpq's options parser splits on. */
export function startupOptions(settings: Record<string, string>): string {
  return Object.entries(settings)
    .map(([name, value]) => `-c ${name}=${value.replace(/\\/g, '\\\\').replace(/ /g, '\\ ')}`)
    .join(' ');
}

/**
 * The URL without its `options` parameter, and that parameter's value. node-postgres lets a URL's
 * parameters override the client's configuration, so `?options=-c search_path=app` would replace
 * every pinned setting (row_security off, lock_timeout, DateStyle) instead of adding one. The URL's
 * options go first in the startup packet and the pinned ones after: PostgreSQL applies them in
 * order, so the user's other settings hold and the pinned ones win.
 */
function withoutUrlOptions(url: string): { url: string; options?: string } {
  // Only the query is taken apart: the rest stays as written, in every form node-postgres reads
  // (a socket URL such as `postgresql://user@/db?host=/var/run/postgresql`, which WHATWG URL refuses).
  const hash = url.indexOf('#');
  const end = hash === -1 ? url.length : hash;
  const start = url.indexOf('?');
  if (start === -1 || start > end) return { url };
  const query = new URLSearchParams(url.slice(start + 1, end));
  const options = query.get('options');
  if (options === null) return { url };
  query.delete('options');
  const rest = query.toString();
  return { url: url.slice(0, start) + (rest ? `?${rest}` : '') + url.slice(end), options };
}

/**
 * A connection to `url` with `settings` in its startup packet, after the URL's own options (if
 * any): the later of two settings of one name wins. Every db-fanout connection is made with it.
 */
export function connectionWithSettings(url: string, settings: Record<string, string>): { connectionString: string; options: string } {
  const split = withoutUrlOptions(url);
  return { connectionString: split.url, options: [split.options, startupOptions(settings)].filter((part) => part).join(' ') };
}

export function postgresPoolConfig(url: string, options: PostgresPoolOptions): PoolConfig {
  return {
    ...connectionWithSettings(url, { ...PINNED_SESSION_SETTINGS, lock_timeout: `${options.lockTimeoutMs}ms`, ...options.settings }),
    application_name: options.applicationName,
    keepAlive: true,
    keepAliveInitialDelayMillis: KEEPALIVE_INITIAL_DELAY_MS,
    connectionTimeoutMillis: options.connectionTimeoutMillis ?? 30_000,
    max: options.max ?? 10,
    idleTimeoutMillis: 30_000,
  };
}

/**
 * Every session checks once a second, while a statement runs, whether db-fanout is still connected
 * (PostgreSQL 14+, `client_connection_check_interval`; older servers, which lack it, are left as
 * they are). When db-fanout drops a session mid-statement (a dump attempt ended because a worker or
 * the store failed, a loader killed during an index build), PostgreSQL otherwise runs the statement
 * to its end, minutes for a rules scan or a big table's COPY, holding its locks on production or the
 * environment, and only then finds the client gone. Not in the startup packet: a server before 14
 * refuses a connection that names a parameter it does not know.
 */
const CHECK_CLIENT_CONNECTION_SQL =
  "SELECT set_config('client_connection_check_interval', '1000', false) WHERE current_setting('server_version_num')::int >= 140000";

/**
 * The one way db-fanout opens PostgreSQL connections. A client that the server or network kills
 * must not crash the process, idle in the pool or checked out: the pool drops an idle one, and for
 * a checked-out one the query in flight, or else the next, reports the problem. pg-pool listens for
 * a client's 'error' only while the client is idle; a checked-out client emits 'error' when its
 * backend is terminated (a DBA ending the dumper's sessions, a server restart), and an unheard
 * 'error' event ends the process, with the dump or load in flight, instead of failing the attempt.
 */
export function createPostgresPool(url: string, options: PostgresPoolOptions): Pool {
  const pool = new Pool({
    ...postgresPoolConfig(url, options),
    // pg-pool (3.14, with pg 8.23) awaits a promise this returns before handing the new client out;
    // @types/pg declares the hook's return as void.
    // eslint-disable-next-line @typescript-eslint/no-misused-promises
    onConnect: async (client) => {
      client.on('error', () => undefined);
      // Best effort: a server that refuses it keeps its default, and the caller's statements go on.
      await client.query(CHECK_CLIENT_CONNECTION_SQL).catch(() => undefined);
    },
  });
  pool.on('error', () => undefined);
  return pool;
}

/**
 * What a plain session of the URL's role in its database has for `names`: ALTER ROLE / ALTER
 * DATABASE ... SET (role-in-database first), else the server's configuration, as PostgreSQL resolves
 * it. Read on one short connection without the pinned settings (only statement_timeout off: a
 * database whose default is a few milliseconds must not fail the read), the one connection
 * db-fanout opens unpinned, which runs nothing but this read. Not from pg_db_role_setting: its
 * fallback, the server's own value, is not readable from a pinned session (`reset_val` is the startup
 * option's; pg_file_settings, the configuration files behind it, is for superusers, and misses
 * nothing only if no other source applies).
 */
export async function unpinnedSessionSettings(url: string, names: readonly string[], applicationName: string): Promise<Record<string, string>> {
  const client = new Client({
    // A plain session of the role through this URL: its own options (say, a TimeZone) count.
    ...connectionWithSettings(url, { statement_timeout: '0' }),
    application_name: applicationName,
    connectionTimeoutMillis: 30_000,
    // Bounded like the pool's sessions: a half-open connection fails the read instead of hanging the load.
    keepAlive: true,
    keepAliveInitialDelayMillis: KEEPALIVE_INITIAL_DELAY_MS,
    query_timeout: 30_000,
  });
  // A connection the server drops between the read and end() must not crash the process.
  client.on('error', () => undefined);
  await client.connect();
  try {
    const { rows } = await client.query<{ name: string; setting: string }>('SELECT name, current_setting(name) AS setting FROM unnest($1::text[]) AS name', [names]);
    return Object.fromEntries(rows.map((r) => [r.name, r.setting]));
  } finally {
    await client.end().catch(() => undefined);
  }
}
