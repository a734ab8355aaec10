import { contentAndSequences, tableContent } from '../support/databases';
import { DEMO_TABLES } from '../support/fixtures';
import { loaderSessions, PipelineHarness, slowLoadSql, until } from '../support/pipeline';
import { TcpProxy } from '../support/tcp-proxy';
import type { RunningApp } from '../support/apps';

/** A target that goes away, or drops the loader's session: retried locally, reported, recovered. */
describe('target database faults', () => {
  let pipeline: PipelineHarness;
  let proxy: TcpProxy;
  let staging: RunningApp;

  beforeAll(async () => {
    pipeline = await PipelineHarness.create('dbfault', {
      environments: ['dev', 'staging', 'qa'],
      targetSql: { qa: slowLoadSql('products', 2) },
      env: { RETRIES: '2', RETRY_DELAY: '1s' },
    });
    proxy = await TcpProxy.start({ host: '127.0.0.1', port: Number(new URL(pipeline.targets.staging.url).port || 5432) });
    await pipeline.startDumper();
    await pipeline.startLoader('dev');
    staging = await pipeline.startLoader('staging', { TARGET_DATABASE_URL: proxy.url(pipeline.targets.staging.url) });
    await pipeline.startLoader('qa');
  });
  afterAll(async () => {
    await pipeline?.cleanup();
    await proxy?.down();
  });

  it('an unreachable target: not-ready, RETRIES retries RETRY_DELAY apart, then snapshot.load.failed; others load; it recovers', async () => {
    const before = await contentAndSequences(pipeline.targets.staging, DEMO_TABLES);
    await proxy.down();
    await until('staging to report not-ready', async () => (await staging.health()) === 503, 15_000);

    const started = Date.now();
    await pipeline.trigger('2024-04-01');
    await pipeline.events.waitFor('staging to give up', (c) => c.of('snapshot.load.failed').length === 1, 30_000);
    const failedAt = Date.now();
    const elapsed = failedAt - started;

    const [failure] = pipeline.events.of('snapshot.load.failed');
    expect(failure).toMatchObject({ environment: 'staging', attempts: 3 });
    expect(String(failure.error)).toMatch(/ECONNREFUSED|connect/);
    expect(elapsed).toBeGreaterThanOrEqual(2_000); // two waits of RETRY_DELAY
    expect(staging.output).toMatch(/failed on attempt 1, retrying in 1s/);
    expect(staging.output).toMatch(/failed on attempt 2, retrying in 1s/);
    // The real spacing of the attempts, from when each line arrived: RETRY_DELAY (1s) apart, not just said so.
    const arrival = (pattern: RegExp) => {
      const line = staging.lines.find((l) => pattern.test(l.text));
      if (!line) throw new Error(`no staging line matches ${pattern}:\n${staging.output}`);
      return line.at;
    };
    const attempt1At = arrival(/failed on attempt 1, retrying in 1s/);
    const attempt2At = arrival(/failed on attempt 2, retrying in 1s/);
    expect(attempt2At - attempt1At).toBeGreaterThanOrEqual(900);
    expect(failedAt - attempt2At).toBeGreaterThanOrEqual(900);
    expect(staging.exitCode).toBeUndefined();
    expect(await staging.health()).toBe(503);
    await pipeline.events.waitFor('dev and qa to load', () => pipeline.loadedIn('dev').length === 1 && pipeline.loadedIn('qa').length === 1);

    await proxy.up();
    await until('staging to report ready again', async () => (await staging.health()) === 200, 15_000);
    expect(await contentAndSequences(pipeline.targets.staging, DEMO_TABLES)).toEqual(before);

    await pipeline.trigger('2024-04-02');
    await pipeline.events.waitFor('staging to load the next snapshot', () => pipeline.loadedIn('staging').length === 1);
    expect(pipeline.loadedIn('staging')[0]).toMatchObject({ snapshotId: pipeline.readyFor('2024-04-02')!.snapshotId, attempts: 1 });
    for (const table of DEMO_TABLES) expect(await tableContent(pipeline.targets.staging, table)).toEqual(await tableContent(pipeline.source, table));
  });

  it("the loader's session terminated mid-load (pg_terminate_backend): retried, then loaded", async () => {
    await pipeline.events.waitFor('qa to be idle', () => pipeline.loadedIn('qa').length === 2, 30_000);
    await pipeline.trigger('2024-04-03');
    let pid = 0;
    await until('the qa load to be inside its COPY', async () => {
      const session = (await loaderSessions(pipeline.targets.qa)).find((s) => s.wait_event === 'PgSleep');
      pid = session?.pid ?? 0;
      return Boolean(session);
    });
    const [{ terminated }] = await pipeline.targets.qa.query<{ terminated: boolean }>('SELECT pg_terminate_backend($1) AS terminated', [pid]);
    expect(terminated).toBe(true);

    const snapshotId = () => pipeline.readyFor('2024-04-03')?.snapshotId;
    await pipeline.events.waitFor('qa to load after the retry', () => pipeline.loadedIn('qa').some((e) => e.snapshotId === snapshotId()), 30_000);
    expect(pipeline.loadedIn('qa').find((e) => e.snapshotId === snapshotId())).toMatchObject({ attempts: 2 });
    expect(pipeline.events.of('snapshot.load.failed').filter((e) => e.environment === 'qa')).toEqual([]);
    for (const table of DEMO_TABLES) expect(await tableContent(pipeline.targets.qa, table)).toEqual(await tableContent(pipeline.source, table));
  });
});
