import { contentAndSequences, tableContent } from './support/databases';
import { DEMO_TABLES } from './support/fixtures';
import { PipelineHarness } from './support/pipeline';

/** The target schema belongs to the environment: a drifted one fails loudly and changes nothing. */
describe('a target missing a column', () => {
  let pipeline: PipelineHarness;

  beforeAll(async () => {
    pipeline = await PipelineHarness.create('missingcol', {
      environments: ['dev', 'staging'],
      targetSql: { staging: 'ALTER TABLE "Sales"."Order Items" DROP COLUMN comment;' },
      // A long retry delay: a permanent error must fail at once, never wait for a retry.
      env: { RETRY_DELAY: '10m' },
    });
    await pipeline.startDumper();
    await pipeline.startLoader('staging');
    await pipeline.startLoader('dev');
  });
  afterAll(() => pipeline?.cleanup());

  it('fails with the column named, leaves the target untouched, and does not hold back other environments', async () => {
    const { targets, source, events } = pipeline;
    const before = await contentAndSequences(targets.staging, DEMO_TABLES);
    await pipeline.trigger('2024-01-07');

    await events.waitFor('staging to fail and dev to load', (c) => c.of('snapshot.load.failed').length === 1 && c.of('snapshot.loaded').length === 1);
    const [failure] = events.of('snapshot.load.failed');
    expect(failure).toMatchObject({ environment: 'staging', attempts: 1 });
    expect(failure.error).toContain('"Sales"."Order Items"."comment"');
    expect(events.of('snapshot.loaded')[0]).toMatchObject({ environment: 'dev' });

    const after = await contentAndSequences(targets.staging, DEMO_TABLES);
    expect(after).toEqual(before);
    const ledger = await targets.staging.query<{ n: string }>('SELECT count(*)::text AS n FROM db_fanout.loaded_snapshots');
    expect(ledger[0].n).toBe('0');
    expect(await tableContent(targets.dev, 'public.products')).toEqual(await tableContent(source, 'public.products'));
  });
});
