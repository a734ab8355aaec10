import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { from as copyFrom } from 'pg-copy-streams';
import { createDatabase, type TestDatabase } from '../../../test/support/databases';
import { TargetDatabase } from './database/target-database';
import { LEDGER_TABLE } from './ledger';

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

describe('a load whose session is terminated mid-COPY', () => {
  it('fails with the server error (retried as transient) and the process survives the connection reset', async () => {
    const db = await createDatabase('terminated_spec', `CREATE TABLE t (x int);
      CREATE FUNCTION slow() RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(3); RETURN true; END $$;
      ALTER TABLE t ADD CONSTRAINT slow CHECK (slow()) NOT VALID;`);
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
