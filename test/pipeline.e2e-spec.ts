import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { SnapshotManifest } from '@app/common/contract';
import { AppFleet } from './support/apps';
import { createDatabase, tableContent, type TestDatabase } from './support/databases';
import { DEMO_TABLES, SCHEMA_SQL, SEED_SQL, STALE_SQL } from './support/fixtures';
import { EventCollector, natsNamespace, plainPublish } from './support/nats';

/**
 * The whole product: a plain NATS client triggers a date, the dumper snapshots an awkward
 * production database, and three environments load it, each on its own.
 */
describe('replicating production into dev, staging and qa', () => {
  const namespace = natsNamespace('pipeline');
  const fleet = new AppFleet();
  const snapshotDir = mkdtempSync(join(tmpdir(), 'db-fanout-pipeline-'));
  const environments = ['dev', 'staging', 'qa'] as const;
  let source: TestDatabase;
  const targets: Record<string, TestDatabase> = {};
  let events: EventCollector;

  beforeAll(async () => {
    source = await createDatabase('e2e_prod', SCHEMA_SQL + SEED_SQL);
    for (const env of environments) targets[env] = await createDatabase(`e2e_${env}`, SCHEMA_SQL + STALE_SQL);
    events = await EventCollector.start(namespace);
    const common = { ...namespace.env, SNAPSHOT_DIR: snapshotDir, RETRY_DELAY: '500ms' };
    await fleet.start('dumper', { ...common, SOURCE_DATABASE_URL: source.url });
    for (const env of environments) {
      await fleet.start('loader', { ...common, TARGET_DATABASE_URL: targets[env].url, LOADER_ENV: env }, `loader-${env}`);
    }
  }, 60_000);

  afterAll(async () => {
    await fleet.stopAll();
    await events?.stop();
    await namespace.cleanup();
    await Promise.all([source, ...Object.values(targets)].filter(Boolean).map((db) => db.drop()));
    rmSync(snapshotDir, { recursive: true, force: true });
  });

  it('loads one consistent snapshot into every environment, equal to production by content', async () => {
    await plainPublish(`${namespace.prefix}replication.trigger`, '{"date":"2024-01-05"}');

    await events.waitFor('snapshot.loaded from all three environments', (c) => c.of('snapshot.loaded').length >= 3, 60_000);
    const [ready] = events.of('snapshot.ready');
    expect(ready).toMatchObject({ date: '2024-01-05', snapshotId: expect.stringMatching(/^20240105-[0-9a-f]{8}$/) });
    expect(ready.location).toBe(join(snapshotDir, `prod_snapshot_${String(ready.snapshotId)}`));

    // Exactly one loaded event per environment, and no failure anywhere (give stragglers a moment).
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const loaded = events.of('snapshot.loaded');
    expect(loaded.map((e) => e.environment).sort()).toEqual(['dev', 'qa', 'staging']);
    expect(events.of('snapshot.load.failed')).toEqual([]);
    for (const event of loaded) {
      expect(event).toMatchObject({ snapshotId: ready.snapshotId, rows: 20000 + 2008 + 4 + 504, attempts: 1 });
      expect(event.durationMs).toEqual(expect.any(Number));
    }

    for (const table of DEMO_TABLES) {
      const expected = await tableContent(source, table);
      expect(expected.length).toBeGreaterThan(0);
      for (const env of environments) {
        expect({ env, table, rows: await tableContent(targets[env], table) }).toEqual({ env, table, rows: expected });
      }
    }
  });

  it('announces every attempt and counts the work in /metrics', async () => {
    expect(events.of('snapshot.dump.started')).toEqual([expect.objectContaining({ date: '2024-01-05', attempt: 1 })]);
    expect(events.of('snapshot.load.started').map((e) => `${String(e.environment)}:${String(e.attempt)}`).sort()).toEqual(['dev:1', 'qa:1', 'staging:1']);

    const metrics = async (name: string) => (await fetch(`http://127.0.0.1:${fleet.app(name).port}/metrics`)).text();
    const dumper = await metrics('dumper');
    expect(dumper).toContain('db_fanout_dumps_total{result="success"} 1');
    expect(dumper).toContain(`db_fanout_dump_rows_total ${20000 + 2008 + 4 + 504}`);
    expect(dumper).toMatch(/db_fanout_dump_duration_seconds_count 1/);
    for (const env of environments) {
      const loader = await metrics(`loader-${env}`);
      expect(loader).toContain(`db_fanout_loads_total{environment="${env}",result="success"} 1`);
      expect(loader).toContain(`db_fanout_load_rows_total{environment="${env}"} ${20000 + 2008 + 4 + 504}`);
      const age = Number(/db_fanout_snapshot_age_seconds\{environment="[a-z]+"\} ([0-9.e+-]+)/.exec(loader)?.[1]);
      expect(age).toBeGreaterThan(0);
      expect(age).toBeLessThan(120);
    }
  });

  it('leaves sequences usable: the next insert continues after production', async () => {
    const [{ max_customer }] = await source.query<{ max_customer: number }>('SELECT max(id) AS max_customer FROM customers');
    const [{ max_item }] = await source.query<{ max_item: string }>('SELECT max("Id")::text AS max_item FROM "Sales"."Order Items"');
    for (const env of environments) {
      const [customer] = await targets[env].query<{ id: number }>(`INSERT INTO customers (name) VALUES ('new in ${env}') RETURNING id`);
      expect(customer.id).toBe(max_customer + 1);
      const [product] = await targets[env].query<{ id: number }>("INSERT INTO products (sku) VALUES ('new') RETURNING id");
      expect(product.id).toBe(505);
      const [item] = await targets[env].query<{ id: string }>(
        `INSERT INTO "Sales"."Order Items" (customer_id, product_id, "Qty", ordered_at) VALUES ($1, $2, 1, now()) RETURNING "Id"::text AS id`,
        [customer.id, product.id],
      );
      expect(BigInt(item.id)).toBe(BigInt(max_item) + 1n);
    }
  });

  it('writes the snapshot as announced: one CSV per table and a manifest, no temporary leftovers', () => {
    const [ready] = events.of('snapshot.ready') as unknown as [{ location: string; tables: { file: string; name: string }[] }];
    expect(readdirSync(snapshotDir).filter((name) => name.startsWith('.tmp-'))).toEqual([]);
    const files = readdirSync(ready.location).sort();
    expect(files).toEqual([...ready.tables.map((t) => t.file), 'manifest.json'].sort());
    const manifest = JSON.parse(readFileSync(join(ready.location, 'manifest.json'), 'utf8')) as SnapshotManifest;
    const products = manifest.tables.find((t) => t.name === 'public.products')!;
    // The generated column is computed by each target, never copied.
    expect(products.columns).toEqual(['id', 'sku', 'category_id', 'price', 'tags', 'attrs', 'photo']);
    expect(manifest.tables.map((t) => t.name)).toContain('"Sales"."Order Items"');
    expect(manifest.sequences).toEqual(
      expect.arrayContaining([expect.objectContaining({ table: 'public.customers', column: 'id', lastValue: '2008', isCalled: true })]),
    );
  });
});
