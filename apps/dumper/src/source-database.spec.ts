import { setTimeout as sleep } from 'node:timers/promises';
import { createDatabase, type TestDatabase } from '../../../test/support/databases';
import { SourceDatabase } from './source-database';

describe('SourceDatabase', () => {
  let db: TestDatabase;
  let source: SourceDatabase;

  beforeAll(async () => {
    db = await createDatabase('source_db_spec');
    // A production database whose own defaults would change what a dump reads.
    await db.query(`ALTER DATABASE "${db.name}" SET DateStyle = 'SQL, DMY'`);
    await db.query(`ALTER DATABASE "${db.name}" SET lock_timeout = 0`);
    source = new SourceDatabase(db.url, 2);
  });
  afterAll(async () => {
    await source?.end();
    await db?.drop();
  });

  it('hands out sessions named db-fanout-dumper with row_security off, a lock_timeout and pinned settings', async () => {
    const client = await source.connect();
    try {
      const { rows } = await client.query<Record<string, string>>(
        `SELECT current_setting('application_name') AS app, current_setting('row_security') AS rls,
                current_setting('lock_timeout') AS lt, current_setting('DateStyle') AS datestyle`,
      );
      expect(rows[0]).toEqual({ app: 'db-fanout-dumper', rls: 'off', lt: '1min', datestyle: 'ISO, MDY' });
    } finally {
      client.release();
    }
  });

  it('ends what production still runs for a session the dump dropped, and lets a DDL waiting on its lock through, within seconds', async () => {
    await db.query('CREATE TABLE public.held (id int)');
    const client = await source.connect();
    const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    await client.query('BEGIN');
    await client.query('LOCK TABLE public.held IN ACCESS SHARE MODE');
    // A statement that writes nothing to the client for a long time, like a rules scan.
    const running = client.query('SELECT pg_sleep(20)').catch((error: unknown) => error);
    await sleep(300);
    // What DumpSessions.abort does when an attempt ends: the connection is destroyed, client side.
    client.release(new Error('the attempt ended'));
    await running;
    const started = Date.now();
    // The database has no lock_timeout: this waits for the dropped session's lock, however long.
    await db.query('ALTER TABLE public.held ADD COLUMN n int');
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(await db.query('SELECT pid FROM pg_stat_activity WHERE pid = $1', [rows[0].pid])).toEqual([]);
  }, 40_000);
});
