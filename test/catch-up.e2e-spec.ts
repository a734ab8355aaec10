import { tableContent } from './support/databases';
import { PipelineHarness } from './support/pipeline';

/** Nothing waits for a loader: one that was down, or an environment added later, catches up on its own. */
describe('environments that were not running when a snapshot was announced', () => {
  let pipeline: PipelineHarness;

  beforeAll(async () => {
    // Empty targets (no stale rows): what each environment holds afterwards comes from a snapshot.
    pipeline = await PipelineHarness.create('catchup', { environments: ['dev', 'qa'] });
    await pipeline.targets.dev.query('TRUNCATE customers, categories, products, "Sales"."Order Items"');
    await pipeline.targets.qa.query('TRUNCATE customers, categories, products, "Sales"."Order Items"');
    await pipeline.startDumper();
  });
  afterAll(() => pipeline?.cleanup());

  it('a loader that was down loads the snapshot it missed when it comes back', async () => {
    const { events, source, targets } = pipeline;
    const devLoader = await pipeline.startLoader('dev');
    await pipeline.trigger('2024-01-01');
    await events.waitFor('dev to load 2024-01-01', () => pipeline.loadedIn('dev').length === 1);

    expect(await devLoader.stop()).toBe(0);
    await source.query("UPDATE customers SET note = 'changed on the 2nd' WHERE id = 1");
    await pipeline.trigger('2024-01-02');
    await events.waitFor('the 2024-01-02 snapshot', () => Boolean(pipeline.readyFor('2024-01-02')));
    expect(pipeline.loadedIn('dev')).toHaveLength(1); // nobody loaded it while dev was down

    await pipeline.startLoader('dev', {}, 'loader-dev-again');
    await events.waitFor('dev to catch up', () => pipeline.loadedIn('dev').length === 2);
    expect(pipeline.loadedIn('dev')[1].snapshotId).toBe(pipeline.readyFor('2024-01-02')!.snapshotId);
    expect(await tableContent(targets.dev, 'customers')).toEqual(await tableContent(source, 'customers'));
  });

  it('a new environment starts from the latest snapshot instead of replaying history', async () => {
    const { events, source, targets } = pipeline;
    await pipeline.startLoader('qa');
    await events.waitFor('qa to load', () => pipeline.loadedIn('qa').length === 1);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const latest = pipeline.readyFor('2024-01-02')!.snapshotId;
    expect(pipeline.loadedIn('qa').map((e) => e.snapshotId)).toEqual([latest]);
    const ledger = await targets.qa.query<{ snapshot_id: string }>('SELECT snapshot_id FROM db_fanout.loaded_snapshots');
    expect(ledger.map((r) => r.snapshot_id)).toEqual([latest]);
    expect(await tableContent(targets.qa, '"Sales"."Order Items"')).toEqual(await tableContent(source, '"Sales"."Order Items"'));
  });
});
