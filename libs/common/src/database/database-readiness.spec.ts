import { createDatabase, type TestDatabase } from '../../../../test/support/databases';
import { ReadinessService } from '../observability/readiness.service';
import { DatabaseReadiness } from './database-readiness';
import { createPostgresPool } from './postgres-pool';

describe('DatabaseReadiness', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createDatabase('readiness_spec');
  });
  afterAll(() => db.drop());

  it('probes through the pool it is given, without opening a connection per probe', async () => {
    const pool = createPostgresPool(db.url, { applicationName: 'db-fanout-readiness-spec', lockTimeoutMs: 1000, max: 2 });
    const readiness = new ReadinessService();
    const check = new DatabaseReadiness(readiness, 'target-database', pool);
    try {
      for (let i = 0; i < 5; i++) await check.probe();
      expect(readiness.snapshot()['target-database']).toEqual({ ok: true, detail: 'reachable' });
      const [{ n }] = await db.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'db-fanout-readiness-spec' AND datname = current_database()",
      );
      expect(n).toBe(1);
    } finally {
      await check.onApplicationShutdown();
      await pool.end();
    }
  });

  it('reports a database it cannot reach, naming the problem, and recovers from a URL of its own', async () => {
    const readiness = new ReadinessService();
    const unreachable = new DatabaseReadiness(readiness, 'source-database', 'postgresql://nobody@127.0.0.1:1/none');
    await unreachable.probe();
    expect(readiness.snapshot()['source-database']).toEqual({ ok: false, detail: expect.stringMatching(/ECONNREFUSED|connect/) });
    await unreachable.onApplicationShutdown();

    const reachable = new DatabaseReadiness(readiness, 'source-database', db.url);
    await reachable.probe();
    expect(readiness.snapshot()['source-database']).toEqual({ ok: true, detail: 'reachable' });
    await reachable.onApplicationShutdown();
  });
});
