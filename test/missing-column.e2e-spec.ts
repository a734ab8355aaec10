import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AppFleet } from './support/apps';
import { createDatabase, tableContent, type TestDatabase } from './support/databases';
import { DEMO_TABLES, SCHEMA_SQL, SEED_SQL, STALE_SQL } from './support/fixtures';
import { EventCollector, natsNamespace, plainPublish } from './support/nats';

/** The target schema belongs to the environment: a drifted one fails loudly and changes nothing. */
describe('a target missing a column', () => {
  const namespace = natsNamespace('missingcol');
  const fleet = new AppFleet();
  const snapshotDir = mkdtempSync(join(tmpdir(), 'db-fanout-missingcol-'));
  let source: TestDatabase;
  let staging: TestDatabase;
  let dev: TestDatabase;
  let events: EventCollector;

  beforeAll(async () => {
    source = await createDatabase('missingcol_prod', SCHEMA_SQL + SEED_SQL);
    dev = await createDatabase('missingcol_dev', SCHEMA_SQL + STALE_SQL);
    staging = await createDatabase('missingcol_staging', SCHEMA_SQL + STALE_SQL + 'ALTER TABLE "Sales"."Order Items" DROP COLUMN comment;');
    events = await EventCollector.start(namespace);
    // A long retry delay: a permanent error must fail at once, never wait for a retry.
    const common = { ...namespace.env, SNAPSHOT_DIR: snapshotDir, RETRY_DELAY: '10m' };
    await fleet.start('dumper', { ...common, SOURCE_DATABASE_URL: source.url });
    await fleet.start('loader', { ...common, TARGET_DATABASE_URL: staging.url, LOADER_ENV: 'staging' }, 'loader-staging');
    await fleet.start('loader', { ...common, TARGET_DATABASE_URL: dev.url, LOADER_ENV: 'dev' }, 'loader-dev');
  });

  afterAll(async () => {
    await fleet.stopAll();
    await events?.stop();
    await namespace.cleanup();
    await Promise.all([source, staging, dev].filter(Boolean).map((db) => db.drop()));
    rmSync(snapshotDir, { recursive: true, force: true });
  });

  it('fails with the column named, leaves the target untouched, and does not hold back other environments', async () => {
    const before = await Promise.all(DEMO_TABLES.map((table) => tableContent(staging, table)));
    await plainPublish(`${namespace.prefix}replication.trigger`, '{"date":"2024-01-07"}');

    await events.waitFor('staging to fail and dev to load', (c) => c.of('snapshot.load.failed').length === 1 && c.of('snapshot.loaded').length === 1);
    const [failure] = events.of('snapshot.load.failed');
    expect(failure).toMatchObject({ environment: 'staging', attempts: 1 });
    expect(failure.error).toContain('"Sales"."Order Items"."comment"');
    expect(events.of('snapshot.loaded')[0]).toMatchObject({ environment: 'dev' });

    const after = await Promise.all(DEMO_TABLES.map((table) => tableContent(staging, table)));
    expect(after).toEqual(before);
    const ledger = await staging.query<{ n: string }>("SELECT count(*)::text AS n FROM db_fanout.loaded_snapshots");
    expect(ledger[0].n).toBe('0');
    expect(await tableContent(dev, 'public.products')).toEqual(await tableContent(source, 'public.products'));
  });
});
