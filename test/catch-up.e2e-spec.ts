import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AppFleet } from './support/apps';
import { createDatabase, tableContent, type TestDatabase } from './support/databases';
import { SCHEMA_SQL, SEED_SQL } from './support/fixtures';
import { EventCollector, natsNamespace, plainPublish } from './support/nats';

/** Nothing waits for a loader: one that was down, or an environment added later, catches up on its own. */
describe('environments that were not running when a snapshot was announced', () => {
  const namespace = natsNamespace('catchup');
  const fleet = new AppFleet();
  const snapshotDir = mkdtempSync(join(tmpdir(), 'db-fanout-catchup-'));
  let source: TestDatabase;
  let dev: TestDatabase;
  let qa: TestDatabase;
  let events: EventCollector;
  let common: Record<string, string>;

  beforeAll(async () => {
    source = await createDatabase('catchup_prod', SCHEMA_SQL + SEED_SQL);
    dev = await createDatabase('catchup_dev', SCHEMA_SQL);
    qa = await createDatabase('catchup_qa', SCHEMA_SQL);
    events = await EventCollector.start(namespace);
    common = { ...namespace.env, SNAPSHOT_DIR: snapshotDir, RETRY_DELAY: '500ms' };
    await fleet.start('dumper', { ...common, SOURCE_DATABASE_URL: source.url });
  });

  afterAll(async () => {
    await fleet.stopAll();
    await events?.stop();
    await namespace.cleanup();
    await Promise.all([source, dev, qa].filter(Boolean).map((db) => db.drop()));
    rmSync(snapshotDir, { recursive: true, force: true });
  });

  const loadedIn = (env: string) => events.of('snapshot.loaded').filter((e) => e.environment === env);
  const readyFor = (date: string) => events.of('snapshot.ready').find((e) => e.date === date)!;

  it('a loader that was down loads the snapshot it missed when it comes back', async () => {
    const devLoader = await fleet.start('loader', { ...common, TARGET_DATABASE_URL: dev.url, LOADER_ENV: 'dev' }, 'loader-dev');
    await plainPublish(`${namespace.prefix}replication.trigger`, '{"date":"2024-01-01"}');
    await events.waitFor('dev to load 2024-01-01', () => loadedIn('dev').length === 1);

    expect(await devLoader.stop()).toBe(0);
    await source.query("UPDATE customers SET note = 'changed on the 2nd' WHERE id = 1");
    await plainPublish(`${namespace.prefix}replication.trigger`, '{"date":"2024-01-02"}');
    await events.waitFor('the 2024-01-02 snapshot', () => Boolean(readyFor('2024-01-02')));
    expect(loadedIn('dev')).toHaveLength(1); // nobody loaded it while dev was down

    await fleet.start('loader', { ...common, TARGET_DATABASE_URL: dev.url, LOADER_ENV: 'dev' }, 'loader-dev-again');
    await events.waitFor('dev to catch up', () => loadedIn('dev').length === 2);
    expect(loadedIn('dev')[1].snapshotId).toBe(readyFor('2024-01-02').snapshotId);
    expect(await tableContent(dev, 'customers')).toEqual(await tableContent(source, 'customers'));
  });

  it('a new environment starts from the latest snapshot instead of replaying history', async () => {
    await fleet.start('loader', { ...common, TARGET_DATABASE_URL: qa.url, LOADER_ENV: 'qa' }, 'loader-qa');
    await events.waitFor('qa to load', () => loadedIn('qa').length === 1);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(loadedIn('qa').map((e) => e.snapshotId)).toEqual([readyFor('2024-01-02').snapshotId]);
    const ledger = await qa.query<{ snapshot_id: string }>('SELECT snapshot_id FROM db_fanout.loaded_snapshots');
    expect(ledger.map((r) => r.snapshot_id)).toEqual([readyFor('2024-01-02').snapshotId]);
    expect(await tableContent(qa, '"Sales"."Order Items"')).toEqual(await tableContent(source, '"Sales"."Order Items"'));
  });
});
