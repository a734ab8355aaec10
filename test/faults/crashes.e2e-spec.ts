import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from 'pg';
import { tableContent } from '../support/databases';
import { DEMO_TABLES } from '../support/fixtures';
import { loaderSessions, PipelineHarness, slowLoadSql, until } from '../support/pipeline';

/** kill -9 and SIGTERM in the middle of the work: nothing is lost, nothing is half-loaded. */
describe('processes killed in the middle of their work', () => {
  let pipeline: PipelineHarness;

  beforeAll(async () => {
    pipeline = await PipelineHarness.create('crash', {
      environments: ['dev', 'qa'],
      // Loads into products take 3 s, after customers and categories are already in the transaction.
      targetSql: { dev: slowLoadSql('products', 3), qa: slowLoadSql('products', 3) },
      env: { ACK_WAIT: '2s' },
    });
  });
  afterAll(() => pipeline?.cleanup());

  const snapshotDirs = () => readdirSync(pipeline.snapshotDir);

  it('kill -9 of the dumper mid-dump publishes nothing and leaves no final snapshot; the trigger completes after a restart', async () => {
    const dumper = await pipeline.startDumper();
    // Hold a lock on one table so the dump stops inside its transaction, after the first tables' COPY.
    const locker = new Client({ connectionString: pipeline.source.url });
    await locker.connect();
    await locker.query('BEGIN; LOCK TABLE public.products IN ACCESS EXCLUSIVE MODE');
    await pipeline.trigger('2024-02-01');
    await until('the dumper to block inside its dump', async () => {
      const rows = await pipeline.source.query("SELECT 1 FROM pg_stat_activity WHERE application_name = 'db-fanout-dumper' AND wait_event_type = 'Lock'");
      return rows.length > 0;
    });
    const partial = snapshotDirs().filter((name) => name.startsWith('.tmp-prod_snapshot_20240201-'));
    expect(partial).toHaveLength(1);
    expect(readdirSync(join(pipeline.snapshotDir, partial[0])).length).toBeGreaterThan(0);

    await dumper.kill();
    await locker.query('ROLLBACK');
    await locker.end();

    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(pipeline.events.of('snapshot.ready')).toEqual([]);
    expect(snapshotDirs().filter((name) => name.startsWith('prod_snapshot_'))).toEqual([]);

    await pipeline.startDumper({}, 'dumper-restarted');
    await pipeline.events.waitFor('the redelivered trigger to complete', (c) => c.of('snapshot.ready').length === 1);
    const ready = pipeline.readyFor('2024-02-01')!;
    expect(existsSync(join(String(ready.location), 'manifest.json'))).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    expect(pipeline.events.of('snapshot.ready')).toHaveLength(1);
  });

  it('kill -9 of a loader mid-COPY leaves the previous data visible; after a restart it loads exactly once', async () => {
    const dev = pipeline.targets.dev;
    const before = await Promise.all(DEMO_TABLES.map((t) => tableContent(dev, t)));
    const loader = await pipeline.startLoader('dev');
    await until('the dev load to be inside its COPY', async () => (await loaderSessions(dev)).some((s) => s.wait_event === 'PgSleep'));
    await loader.kill();
    // Right after the kill: still the previous data (PostgreSQL rolls the transaction back).
    expect(await Promise.all(DEMO_TABLES.map((t) => tableContent(dev, t)))).toEqual(before);
    expect(pipeline.loadedIn('dev')).toEqual([]);

    await pipeline.startLoader('dev', {}, 'loader-dev-restarted');
    await pipeline.events.waitFor('dev to load after the restart', () => pipeline.loadedIn('dev').length === 1);
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    expect(pipeline.loadedIn('dev')).toHaveLength(1);
    for (const table of DEMO_TABLES) expect(await tableContent(dev, table)).toEqual(await tableContent(pipeline.source, table));
  });

  it('SIGTERM during a load lets it commit, exits 0, and nothing is loaded twice after a restart', async () => {
    const qa = pipeline.targets.qa;
    const loader = await pipeline.startLoader('qa');
    await until('the qa load to be inside its COPY', async () => (await loaderSessions(qa)).some((s) => s.wait_event === 'PgSleep'));
    expect(await loader.stop()).toBe(0);
    expect(loader.output).toContain('SIGTERM: finishing in-flight work, then exiting');

    const ledger = await qa.query<{ snapshot_id: string }>('SELECT snapshot_id FROM db_fanout.loaded_snapshots');
    expect(ledger).toHaveLength(1);
    for (const table of DEMO_TABLES) expect(await tableContent(qa, table)).toEqual(await tableContent(pipeline.source, table));
    await pipeline.events.waitFor('qa loaded', () => pipeline.loadedIn('qa').length === 1);

    await pipeline.startLoader('qa', {}, 'loader-qa-restarted');
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    expect(pipeline.loadedIn('qa')).toHaveLength(1);
    expect(await qa.query('SELECT snapshot_id FROM db_fanout.loaded_snapshots')).toHaveLength(1);
  });
});
