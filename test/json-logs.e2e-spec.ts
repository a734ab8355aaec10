import { PipelineHarness } from './support/pipeline';

/** LOG_FORMAT=json: every line is one JSON object, and a run's lines say which snapshot and environment. */
describe('structured JSON logs', () => {
  let pipeline: PipelineHarness;

  beforeAll(async () => {
    pipeline = await PipelineHarness.create('jsonlogs', { environments: ['dev'], env: { LOG_FORMAT: 'json' } });
  });
  afterAll(() => pipeline?.cleanup());

  it('writes only JSON lines, with snapshotId and environment on every line of a load', async () => {
    const dumper = await pipeline.startDumper();
    const loader = await pipeline.startLoader('dev');
    await pipeline.trigger('2024-08-01');
    await pipeline.events.waitFor('dev to load', () => pipeline.loadedIn('dev').length === 1);
    const snapshotId = pipeline.readyFor('2024-08-01')!.snapshotId;

    for (const app of [dumper, loader]) {
      const lines = app.output.trim().split('\n');
      expect(lines.length).toBeGreaterThan(3);
      for (const line of lines) expect(() => JSON.parse(line) as unknown).not.toThrow();
    }
    const loaderLines = loader.output.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    const ofTheLoad = loaderLines.filter((line) => line.context === 'Loader');
    expect(ofTheLoad.length).toBeGreaterThanOrEqual(3); // loading, copying, phases, loaded
    for (const line of ofTheLoad) expect(line).toMatchObject({ app: 'loader', level: 'log', snapshotId, environment: 'dev', subject: 'snapshot.ready' });
    expect(ofTheLoad.map((line) => line.message)).toContain(`loading snapshot ${String(snapshotId)} into dev`);

    const dumpLines = dumper.output.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>).filter((line) => line.context === 'Dumper');
    expect(dumpLines.length).toBeGreaterThan(0);
    for (const line of dumpLines) expect(line).toMatchObject({ app: 'dumper', date: '2024-08-01', subject: 'replication.trigger' });
  });
});
