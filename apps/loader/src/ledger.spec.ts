import { Client } from 'pg';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { from as copyFrom } from 'pg-copy-streams';
import { createDatabase, type TestDatabase } from '../../../test/support/databases';
import { TargetDatabase } from './database/target-database';
import { LEDGER_TABLE, LedgerRepository } from './ledger';

describe('the ledger migration', () => {
  let db: TestDatabase;
  beforeEach(async () => {
    db = await createDatabase('ledger_spec');
  });
  afterEach(() => db.drop());

  const columns = async () =>
    (await db.query<{ name: string }>(`SELECT attname AS name FROM pg_attribute WHERE attrelid = '${LEDGER_TABLE}'::regclass AND attnum > 0 ORDER BY attnum`)).map(
      (r) => r.name,
    );

  it('creates the ledger once per process, also when two replicas start at the same moment', async () => {
    const replicas = [new TargetDatabase(db.url), new TargetDatabase(db.url)];
    try {
      await Promise.all(replicas.map((r) => r.ensureLedger()));
      expect(await columns()).toEqual(expect.arrayContaining(['snapshot_id', 'announced_at', 'snapshot_created_at', 'snapshot_taken_at', 'drift']));
    } finally {
      await Promise.all(replicas.map((r) => r.close()));
    }
  });

  it('records when the load finished its work, not when its transaction began (the metric of the last load reads it)', async () => {
    const target = new TargetDatabase(db.url);
    try {
      const load = await target.begin();
      const began = Date.now();
      await load.client.query('SELECT pg_sleep(1.5)'); // the COPYs
      await load.ledger.record({ snapshotId: '20240101-00000000', date: '2024-01-01', createdAt: '2024-01-01T00:00:00Z', takenAt: '2024-01-01T00:00:00Z', environment: 'dev', rows: 1, durationMs: 1500, attempts: 1 });
      await load.commit();
      expect((await target.latestLoad())!.loadedAtMs).toBeGreaterThanOrEqual(began + 1_400);
    } finally {
      await target.close();
    }
  });

  it('is made again by the next load when it was dropped while the loader ran (the environment restored or rebuilt)', async () => {
    const target = new TargetDatabase(db.url);
    try {
      await (await target.begin()).commit();
      await db.query('DROP SCHEMA db_fanout CASCADE');
      expect(await target.loadedEntry('20240101-00000000')).toBeUndefined();
      expect(await target.latestLoad()).toBeUndefined();
      await (await target.begin()).commit();
      expect(await columns()).toEqual(expect.arrayContaining(['snapshot_id', 'announced_at']));
      expect(await target.loadedEntry('20240101-00000000')).toBeUndefined();
    } finally {
      await target.close();
    }
  });

  it('at startup, upgrades an existing ledger but creates none: a target is first written by a load that checked it is not the source', async () => {
    const fresh = new TargetDatabase(db.url);
    try {
      await fresh.onModuleInit();
      expect(await fresh.latestLoad()).toBeUndefined();
      expect(await fresh.loadedEntry('20240101-00000000')).toBeUndefined();
      expect(await db.query("SELECT nspname FROM pg_namespace WHERE nspname = 'db_fanout'")).toEqual([]);
    } finally {
      await fresh.close();
    }

    await db.query(`CREATE SCHEMA db_fanout; CREATE TABLE ${LEDGER_TABLE} (snapshot_id text PRIMARY KEY, snapshot_date date NOT NULL, environment text NOT NULL,
      rows bigint NOT NULL, duration_ms bigint NOT NULL, attempts int NOT NULL, loaded_at timestamptz NOT NULL DEFAULT now(), announced_at timestamptz)`);
    const upgraded = new TargetDatabase(db.url);
    try {
      await upgraded.onModuleInit();
      expect(await columns()).toEqual(expect.arrayContaining(['snapshot_taken_at', 'drift', 'reload_seq']));
    } finally {
      await upgraded.close();
    }
  });

  it('upgrades a ledger of the first release, and takes no lock on the ledger once it is up to date', async () => {
    await db.query(`CREATE SCHEMA db_fanout; CREATE TABLE ${LEDGER_TABLE} (snapshot_id text PRIMARY KEY, snapshot_date date NOT NULL, environment text NOT NULL,
      rows bigint NOT NULL, duration_ms bigint NOT NULL, attempts int NOT NULL, loaded_at timestamptz NOT NULL DEFAULT now(), announced_at timestamptz)`);
    const first = new TargetDatabase(db.url);
    await first.ensureLedger();
    await first.close();
    expect(await columns()).toEqual(expect.arrayContaining(['snapshot_created_at', 'snapshot_taken_at', 'drift']));

    // A session holding the ledger (as a long load does) must not block the next replica's start.
    const blocker = new TargetDatabase(db.url);
    const held = await blocker.pool.connect();
    await held.query(`BEGIN; LOCK TABLE ${LEDGER_TABLE} IN SHARE ROW EXCLUSIVE MODE`);
    const second = new TargetDatabase(db.url);
    try {
      const started = Date.now();
      await second.ensureLedger();
      expect(Date.now() - started).toBeLessThan(5_000);
    } finally {
      await held.query('ROLLBACK');
      held.release();
      await blocker.close();
      await second.close();
    }
  });
});

describe("the ledger's lock", () => {
  let db: TestDatabase;
  const clients: Client[] = [];
  async function session(applicationName: string): Promise<Client> {
    const client = new Client({ connectionString: db.url, application_name: applicationName });
    await client.connect();
    clients.push(client);
    return client;
  }
  beforeEach(async () => {
    db = await createDatabase('ledger_lock_spec');
    const target = new TargetDatabase(db.url);
    await target.ensureLedger();
    await target.close();
  });
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.end().catch(() => undefined)));
    await db.drop();
  });

  it("waits past lock_timeout for the load holding it, saying who holds it, then takes it in a transaction still usable", async () => {
    const other = await session('db-fanout-loader-dev');
    await other.query(`BEGIN; LOCK TABLE ${LEDGER_TABLE} IN SHARE ROW EXCLUSIVE MODE`);
    const otherPid = (await other.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    const waiting = await session('waiting-load');
    await waiting.query("BEGIN; SET LOCAL lock_timeout = '200ms'");
    const waits: string[] = [];
    const locked = new LedgerRepository(waiting).lock({ onWait: (holders) => waits.push(holders) });
    const outcome = locked.then(() => 'locked', (error: unknown) => `failed: ${String(error)}`);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(waits.length).toBeGreaterThanOrEqual(2);
    expect(waits[0]).toMatch(new RegExp(`^pid ${otherPid} \\(db-fanout-loader-dev, idle in transaction since `));
    await other.query('COMMIT');
    expect(await outcome).toBe('locked');
    // The lock is held for the rest of the transaction, which took no harm from the timed-out waits.
    const { rows } = await waiting.query<{ mode: string }>(`SELECT mode FROM pg_locks WHERE relation = '${LEDGER_TABLE}'::regclass AND pid = pg_backend_pid() AND granted`);
    expect(rows.map((r) => r.mode)).toEqual(['ShareRowExclusiveLock']);
    await waiting.query('COMMIT');
  });

  it('stops waiting when the app stops (the message is delivered again later)', async () => {
    const other = await session('db-fanout-loader-dev');
    await other.query(`BEGIN; LOCK TABLE ${LEDGER_TABLE} IN SHARE ROW EXCLUSIVE MODE`);
    const waiting = await session('waiting-load');
    await waiting.query("BEGIN; SET LOCAL lock_timeout = '200ms'");
    const stopping = new AbortController();
    const locked = new LedgerRepository(waiting).lock({ signal: stopping.signal });
    setTimeout(() => stopping.abort(), 500);
    await expect(locked).rejects.toMatchObject({ code: '55P03' });
    await waiting.query('ROLLBACK');
    await other.query('ROLLBACK');
  });

  it('stops waiting within a second or so under the loader\'s own 60 s lock_timeout, which the rest of the load keeps', async () => {
    const other = await session('db-fanout-loader-dev');
    await other.query(`BEGIN; LOCK TABLE ${LEDGER_TABLE} IN SHARE ROW EXCLUSIVE MODE`);
    const waiting = await session('waiting-load');
    await waiting.query("BEGIN; SET LOCAL lock_timeout = '60s'");
    const stopping = new AbortController();
    const locked = new LedgerRepository(waiting).lock({ signal: stopping.signal });
    const outcome = locked.then(() => 'locked', (error: { code?: string }) => error.code);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const stoppedAt = Date.now();
    stopping.abort();
    expect(await outcome).toBe('55P03');
    expect(Date.now() - stoppedAt).toBeLessThan(3_000);
    await waiting.query('ROLLBACK');

    // Taken at last: the session's lock_timeout is the same as before the wait.
    await waiting.query("BEGIN; SET LOCAL lock_timeout = '60s'");
    const taken = new LedgerRepository(waiting).lock();
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    await other.query('ROLLBACK');
    await taken;
    expect((await waiting.query<{ lock_timeout: string }>('SHOW lock_timeout')).rows[0].lock_timeout).toBe('1min');
    await waiting.query('ROLLBACK');
  });
});

describe('a load whose session is terminated mid-COPY', () => {
  it('fails with the server error (retried as transient) and the process survives the connection reset', async () => {
    const db = await createDatabase('terminated_spec', `CREATE TABLE t (x int);
      CREATE FUNCTION slow() RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(3); RETURN true; END $$;
      ALTER TABLE t ADD CONSTRAINT slow CHECK (slow());`);
    const database = new TargetDatabase(db.url);
    const crashes: unknown[] = [];
    const onUncaught = (error: unknown) => crashes.push(error);
    process.on('uncaughtException', onUncaught);
    try {
      const load = await database.begin();
      const [{ pid }] = (await load.client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows;
      setTimeout(() => void db.query('SELECT pg_terminate_backend($1)', [pid]), 500);
      const copy = load.client.query(copyFrom('COPY t FROM STDIN'));
      const error = await pipeline(Readable.from(Array.from({ length: 10_000 }, (_, i) => `${i}\n`)), copy).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: '57P01' });
      await load.rollback();
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(crashes).toEqual([]);
      // The pool still serves the next load.
      await expect(database.pool.query('SELECT 1')).resolves.toBeDefined();
    } finally {
      process.off('uncaughtException', onUncaught);
      await database.close();
      await db.drop();
    }
  });
});
