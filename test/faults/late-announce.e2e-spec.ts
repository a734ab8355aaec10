import { PipelineHarness, slowLoadSql, until } from '../support/pipeline';
import { TcpProxy } from '../support/tcp-proxy';
import type { RunningApp } from '../support/apps';

type Step = { state: string; startedAt?: string; endedAt?: string; attempts: number };
type Run = { date: string; loads: Record<string, Step> };

/**
 * The loader's NATS is cut while its load commits: snapshot.loaded gets through 20 s later. The run
 * history ends the load when it committed (the event's loadedAt), not when the event was stored.
 */
describe('a snapshot.loaded announced late', () => {
  let pipeline: PipelineHarness;
  let proxy: TcpProxy;
  let scheduler: RunningApp;
  beforeAll(async () => {
    pipeline = await PipelineHarness.create('lateannounce', { environments: ['dev'], targetSql: { dev: slowLoadSql('public.products', 6) } });
    const nats = new URL(pipeline.namespace.env.NATS_URL);
    proxy = await TcpProxy.start({ host: nats.hostname, port: Number(nats.port || 4222) });
    scheduler = await pipeline.fleet.start('scheduler', { ...pipeline.commonEnv, SCHEDULE: '0 0 1 1 *' });
    await pipeline.startDumper();
    await pipeline.startLoader('dev', { NATS_URL: proxy.url(pipeline.namespace.env.NATS_URL) });
  }, 60_000);
  afterAll(async () => {
    await proxy?.up().catch(() => undefined);
    await pipeline?.cleanup();
    await proxy?.down();
  });
  const runOf = async (date: string) => ((await (await fetch(`http://127.0.0.1:${scheduler.port}/api/runs`)).json()) as Run[]).find((r) => r.date === date);

  it('shows the time the load took, not until its announcement got through', async () => {
    await pipeline.trigger('2024-06-01');
    await until('dev to start loading', async () => (await runOf('2024-06-01'))?.loads.dev?.state === 'running', 60_000);
    await new Promise((r) => setTimeout(r, 1_000));
    await proxy.down(); // NATS unreachable for the loader while its load commits
    await new Promise((r) => setTimeout(r, 20_000));
    await proxy.up();
    await until('dev loaded', async () => (await runOf('2024-06-01'))?.loads.dev?.state === 'success', 60_000);
    const step = (await runOf('2024-06-01'))!.loads.dev;
    const [loaded] = pipeline.loadedIn('dev');
    expect(loaded.loadedAt).toBe(step.endedAt);
    const shown = Date.parse(step.endedAt!) - Date.parse(step.startedAt!);
    // The load's own duration counts from before its start was announced (reading the files) to
    // just before COMMIT: the step shows about that, not the 20 s the announcement waited.
    expect(shown).toBeLessThan((loaded.durationMs as number) + 3_000);
    expect(shown).toBeGreaterThan(5_000);
  }, 180_000);
});
