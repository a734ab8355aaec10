import { TargetDatabase } from '../apps/loader/src/database/target-database';
import { LEDGER_TABLE } from '../apps/loader/src/ledger';
import { RunningApp } from './support/apps';
import { createDatabase, type TestDatabase } from './support/databases';
import { natsNamespace, type NatsNamespace } from './support/nats';
import { until } from './support/pipeline';

/**
 * A restarted loader reports the data its environment holds from the target's ledger, and no
 * process exports a timestamp gauge it never set (0 reads as 1970 and trips staleness alerts).
 */
describe('metrics of a restarted loader, and of a replica that takes no message', () => {
  let namespace: NatsNamespace;
  let target: TestDatabase;
  let loader: RunningApp | undefined;

  beforeAll(async () => {
    namespace = natsNamespace('metricsrestart');
    target = await createDatabase('metrics_restart');
    const database = new TargetDatabase(target.url);
    await database.ensureLedger();
    await database.close();
    // What an earlier process of this loader left: data taken 3 hours ago, loaded 2 hours ago.
    await target.query(
      `INSERT INTO ${LEDGER_TABLE} (snapshot_id, snapshot_date, environment, rows, duration_ms, attempts, loaded_at, snapshot_created_at, snapshot_taken_at)
       VALUES ('prod_snapshot_20240105_old', '2024-01-05', 'dev', 10, 1000, 1, now() - interval '2 hours', now() - interval '3 hours', now() - interval '3 hours')`,
    );
  });

  afterAll(async () => {
    await loader?.stop();
    await namespace?.cleanup();
    await target?.drop();
  });

  it('has db_fanout_snapshot_age_seconds and the last load time from the ledger, and no last-snapshot gauge of 1970', async () => {
    loader = await RunningApp.start('loader', { ...namespace.env, TARGET_DATABASE_URL: target.url, LOADER_ENV: 'dev' });
    const base = `http://127.0.0.1:${loader.port}`;
    await until('the loader to be healthy', async () => {
      if (loader!.exitCode !== undefined) throw new Error(`loader exited with ${loader!.exitCode}:\n${loader!.output}`);
      return (await fetch(`${base}/health`).catch(() => undefined))?.status === 200;
    });
    const metrics = await (await fetch(`${base}/metrics`)).text();
    const value = (name: string) => Number(new RegExp(`^${name}\\{environment="dev"\\} ([0-9.e+-]+)$`, 'm').exec(metrics)?.[1]);
    expect(value('db_fanout_snapshot_age_seconds')).toBeGreaterThan(3 * 3600 - 5);
    expect(value('db_fanout_snapshot_age_seconds')).toBeLessThan(3 * 3600 + 120);
    expect(Math.abs(value('db_fanout_last_load_success_timestamp_seconds') - (Date.now() / 1000 - 2 * 3600))).toBeLessThan(120);
    // The dumper's and the scheduler's timestamps are theirs: a loader never exports them as 0.
    expect(metrics).not.toMatch(/^db_fanout_last_snapshot_created_timestamp_seconds /m);
    expect(metrics).not.toMatch(/^db_fanout_last_trigger_published_timestamp_seconds /m);

    // Another replica of the loader (they share the environment's consumer) loads newer data: this
    // one, which took no message, reports it too, read from the ledger at the scrape.
    await target.query(
      `INSERT INTO ${LEDGER_TABLE} (snapshot_id, snapshot_date, environment, rows, duration_ms, attempts, loaded_at, snapshot_created_at, snapshot_taken_at)
       VALUES ('prod_snapshot_20240106_new', '2024-01-06', 'dev', 10, 1000, 1, now(), now() - interval '10 minutes', now() - interval '10 minutes')`,
    );
    const after = await (await fetch(`${base}/metrics`)).text();
    const now = (name: string) => Number(new RegExp(`^${name}\\{environment="dev"\\} ([0-9.e+-]+)$`, 'm').exec(after)?.[1]);
    expect(now('db_fanout_snapshot_age_seconds')).toBeGreaterThan(600 - 5);
    expect(now('db_fanout_snapshot_age_seconds')).toBeLessThan(600 + 120);
    expect(Math.abs(now('db_fanout_last_load_success_timestamp_seconds') - Date.now() / 1000)).toBeLessThan(120);
  }, 60_000);
});
