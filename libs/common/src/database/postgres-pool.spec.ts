import { Client } from 'pg';
import { createDatabase, type TestDatabase } from '../../../../test/support/databases';
import { createPostgresPool, startupOptions, unpinnedSessionSettings } from './postgres-pool';

describe('createPostgresPool', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createDatabase('pool_spec');
    // A database whose own defaults would change what a session reads and writes.
    await db.query(`ALTER DATABASE "${db.name}" SET DateStyle = 'SQL, DMY'`);
    await db.query(`ALTER DATABASE "${db.name}" SET IntervalStyle = 'sql_standard'`);
    await db.query(`ALTER DATABASE "${db.name}" SET extra_float_digits = -3`);
    await db.query(`ALTER DATABASE "${db.name}" SET array_nulls = off`);
    await db.query(`ALTER DATABASE "${db.name}" SET xmloption = document`);
    // Last: a plain session opened after this one (db.query's) gets it, and on a busy machine
    // 1 ms cancels even an ALTER DATABASE.
    await db.query(`ALTER DATABASE "${db.name}" SET statement_timeout = '1ms'`);
  });
  afterAll(() => db.drop());

  it('pins the session settings whatever the database defaults to', async () => {
    const pool = createPostgresPool(db.url, { applicationName: 'db-fanout-spec', lockTimeoutMs: 1234, settings: { row_security: 'off' } });
    try {
      const { rows } = await pool.query<Record<string, string>>(
        `SELECT current_setting('DateStyle') AS datestyle, current_setting('IntervalStyle') AS intervalstyle,
                current_setting('extra_float_digits') AS efd, current_setting('statement_timeout') AS st,
                current_setting('lock_timeout') AS lt, current_setting('row_security') AS rls,
                current_setting('application_name') AS app, date '2024-03-01'::text AS d, interval '1 day 2 hours'::text AS i`,
      );
      expect(rows[0]).toEqual({
        datestyle: 'ISO, MDY',
        intervalstyle: 'postgres',
        efd: '3',
        st: '0',
        lt: '1234ms',
        rls: 'off',
        app: 'db-fanout-spec',
        d: '2024-03-01',
        i: '1 day 02:00:00',
      });
    } finally {
      await pool.end();
    }
  });

  it("keeps a URL's own options beside the pinned settings, which win where both set one", async () => {
    const url = new URL(db.url);
    url.searchParams.set('options', '-c search_path=elsewhere,public -c DateStyle=SQL,DMY -c lock_timeout=0');
    const pool = createPostgresPool(url.toString(), { applicationName: 'db-fanout-spec', lockTimeoutMs: 1234, settings: { row_security: 'off' } });
    try {
      const { rows } = await pool.query<Record<string, string>>(
        "SELECT current_setting('search_path') AS sp, current_setting('DateStyle') AS ds, current_setting('lock_timeout') AS lt, current_setting('row_security') AS rls, current_database() AS db",
      );
      expect(rows[0]).toEqual({ sp: 'elsewhere,public', ds: 'ISO, MDY', lt: '1234ms', rls: 'off', db: db.name });
    } finally {
      await pool.end();
    }
    // A plain session through that URL has its options too.
    expect(await unpinnedSessionSettings(url.toString(), ['search_path', 'statement_timeout'], 'db-fanout-spec')).toEqual({ search_path: 'elsewhere,public', statement_timeout: '0' });
  });

  it('does the same for a socket URL with a user and no host, which node-postgres reads and WHATWG URL refuses', async () => {
    const tcp = new URL(db.url);
    const options = encodeURIComponent('-c search_path=elsewhere -c lock_timeout=0');
    const socketUrl = `postgresql://${tcp.username}@/${db.name}?host=/var/run/postgresql&options=${options}`;
    expect(() => new URL(socketUrl)).toThrow();
    const pool = createPostgresPool(socketUrl, { applicationName: 'db-fanout-spec', lockTimeoutMs: 1234, settings: { row_security: 'off' } });
    try {
      const { rows } = await pool.query<Record<string, string>>(
        "SELECT current_setting('search_path') AS sp, current_setting('lock_timeout') AS lt, current_setting('row_security') AS rls, current_setting('TimeZone') AS tz, current_database() AS db, inet_server_addr() IS NULL AS socket",
      );
      expect(rows[0]).toEqual({ sp: 'elsewhere', lt: '1234ms', rls: 'off', tz: 'UTC', db: db.name, socket: true });
    } finally {
      await pool.end();
    }
  });

  it('survives the server terminating a checked-out session: the next query on it fails instead of the process', async () => {
    const pool = createPostgresPool(db.url, { applicationName: 'db-fanout-spec', lockTimeoutMs: 1000 });
    // The database's own statement_timeout (1ms, above) is not the admin's.
    const admin = new Client({ connectionString: db.url, options: '-c statement_timeout=0' });
    await admin.connect();
    const client = await pool.connect();
    try {
      const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      const closed = new Promise((resolve) => client.once('end', resolve));
      // A DBA ending the session between two of its queries (or a server restart).
      await admin.query('SELECT pg_terminate_backend($1)', [rows[0].pid]);
      await closed;
      await expect(client.query('SELECT 1')).rejects.toThrow(/not queryable|terminated/);
    } finally {
      client.release(true);
      await admin.end();
      await pool.end();
    }
  });

  it('reads arrays with NULL elements and xml content fragments as a dump wrote them, whatever the database defaults to', async () => {
    const pool = createPostgresPool(db.url, { applicationName: 'db-fanout-spec', lockTimeoutMs: 1000 });
    try {
      await pool.query('CREATE TABLE arrays_and_xml (tags text[], ids int[], doc xml)');
      // What COPY FROM reads of a CSV line with these values (the text form of each type).
      await pool.query(`INSERT INTO arrays_and_xml VALUES ('{x,NULL}', '{1,NULL}', 'abc<a/>')`);
      const { rows } = await pool.query('SELECT tags[2] IS NULL AS tag_null, ids[2] IS NULL AS id_null, doc::text AS doc FROM arrays_and_xml');
      expect(rows).toEqual([{ tag_null: true, id_null: true, doc: 'abc<a/>' }]);
    } finally {
      await pool.end();
    }
  });

  it("reads a plain session's own settings: the role's in this database over the database's, the server's otherwise", async () => {
    const names = ['DateStyle', 'IntervalStyle', 'TimeZone', 'extra_float_digits', 'search_path'];
    const pool = createPostgresPool(db.url, { applicationName: 'db-fanout-spec', lockTimeoutMs: 1000 });
    let server: { search_path: string };
    try {
      await pool.query(`ALTER ROLE CURRENT_USER IN DATABASE "${db.name}" SET TimeZone = 'Pacific/Chatham'`);
      [server] = (await pool.query<{ search_path: string }>("SELECT reset_val AS search_path FROM pg_settings WHERE name = 'search_path'")).rows;
    } finally {
      await pool.end();
    }
    // This database's statement_timeout of 1ms would cancel the read: the one setting that connection pins.
    expect(await unpinnedSessionSettings(db.url, names, 'db-fanout-spec')).toEqual({
      DateStyle: 'SQL, DMY',
      IntervalStyle: 'sql_standard',
      TimeZone: 'Pacific/Chatham',
      extra_float_digits: '-3',
      search_path: server.search_path,
    });
  });

  it('escapes spaces and backslashes for the startup packet', () => {
    expect(startupOptions({ DateStyle: 'ISO, MDY', search_path: 'a\\b' })).toBe('-c DateStyle=ISO,\\ MDY -c search_path=a\\\\b');
  });
});
