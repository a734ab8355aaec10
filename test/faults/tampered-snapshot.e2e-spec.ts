import { closeSync, openSync, readSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { contentAndSequences } from '../support/databases';
import { DEMO_TABLES } from '../support/fixtures';
import { PipelineHarness } from '../support/pipeline';

/** Snapshots are trusted only as far as their checksums, and never loaded back into production. */
describe('a tampered snapshot and a loader pointed at production', () => {
  let pipeline: PipelineHarness;

  beforeAll(async () => {
    pipeline = await PipelineHarness.create('tamper', { environments: ['dev'], env: { RETRY_DELAY: '10m' } });
    await pipeline.startDumper();
  });
  afterAll(() => pipeline?.cleanup());

  it('a file altered after publication fails at once with its name, and the target is untouched', async () => {
    await pipeline.trigger('2024-05-01');
    await pipeline.events.waitFor('the snapshot', (c) => c.of('snapshot.ready').length === 1);
    const ready = pipeline.readyFor('2024-05-01') as { location: string; tables: { name: string; file: string }[] };
    const products = ready.tables.find((t) => t.name === 'public.products')!;
    const path = join(ready.location, products.file);
    // Flip one byte in the middle of the file: same size, different content.
    const size = statSync(path).size;
    const fd = openSync(path, 'r+');
    const byte = Buffer.alloc(1);
    readSync(fd, byte, 0, 1, Math.floor(size / 2));
    writeSync(fd, Buffer.from([byte[0] === 0x41 ? 0x42 : 0x41]), 0, 1, Math.floor(size / 2));
    closeSync(fd);

    const before = await contentAndSequences(pipeline.targets.dev, DEMO_TABLES);
    await pipeline.startLoader('dev');
    await pipeline.events.waitFor('the load to fail', (c) => c.of('snapshot.load.failed').length === 1);
    const [failure] = pipeline.events.of('snapshot.load.failed');
    expect(failure).toMatchObject({ environment: 'dev', attempts: 1 });
    expect(String(failure.error)).toContain(`checksum mismatch in ${products.file}`);
    expect(await contentAndSequences(pipeline.targets.dev, DEMO_TABLES)).toEqual(before);
    expect(pipeline.events.of('snapshot.loaded')).toEqual([]);
  });

  it('a loader whose target is the source database refuses and changes nothing', async () => {
    const before = await contentAndSequences(pipeline.source, DEMO_TABLES);
    await pipeline.fleet.start('loader', { ...pipeline.commonEnv, TARGET_DATABASE_URL: pipeline.source.url, LOADER_ENV: 'oops' }, 'loader-oops');
    await pipeline.trigger('2024-05-02');
    await pipeline.events.waitFor('the refusal', (c) => c.of('snapshot.load.failed').some((e) => e.environment === 'oops'));
    const failure = pipeline.events.of('snapshot.load.failed').find((e) => e.environment === 'oops')!;
    expect(failure).toMatchObject({ attempts: 1 });
    expect(String(failure.error)).toMatch(/refusing to load snapshot \S+ into its own source database tamper_prod_/);
    expect(await contentAndSequences(pipeline.source, DEMO_TABLES)).toEqual(before);
  });
});
