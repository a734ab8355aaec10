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
      expect(await columns()).toEqual(expect.arrayContaining(['snapshot_id', 'announced_at', 'snapshot_created_at', 'snapshot_taken_at']));
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
    expect(await columns()).toEqual(expect.arrayContaining(['snapshot_created_at', 'snapshot_taken_at']));

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
