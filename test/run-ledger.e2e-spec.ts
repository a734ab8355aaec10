import type { RunningApp } from './support/apps';
import { PipelineHarness, until } from './support/pipeline';
import { plainPublish } from './support/nats';
import { TcpProxy } from './support/tcp-proxy';

interface Step {
  state: string;
  attempts: number;
  rows?: number;
  bytes?: number;
  error?: string;
}
interface Run {
  date: string;
  dump: Step;
  loads: Record<string, Step>;
}

/** The run history (Airflow's grid): every run's dump and loads with their states, kept in JetStream KV. */
describe('the run ledger behind GET /api/runs', () => {
  let pipeline: PipelineHarness;
  let proxy: TcpProxy;
  let scheduler: RunningApp;

  beforeAll(async () => {
    pipeline = await PipelineHarness.create('runledger', {
      environments: ['dev', 'staging', 'qa'],
      targetSql: { staging: 'ALTER TABLE public.products DROP COLUMN attrs;' },
      env: { RETRIES: '2', RETRY_DELAY: '3s' },
    });
    proxy = await TcpProxy.start({ host: '127.0.0.1', port: Number(new URL(pipeline.targets.qa.url).port || 5432) });
    scheduler = await pipeline.fleet.start('scheduler', { ...pipeline.commonEnv, SCHEDULE: '0 0 1 1 *' });
    await pipeline.startDumper();
    await pipeline.startLoader('dev');
    await pipeline.startLoader('staging');
    await pipeline.startLoader('qa', { TARGET_DATABASE_URL: proxy.url(pipeline.targets.qa.url) });
  });
  afterAll(async () => {
    await pipeline?.cleanup();
    await proxy?.down();
  });

  const runs = async (app = scheduler): Promise<Run[]> => (await (await fetch(`http://127.0.0.1:${app.port}/api/runs`)).json()) as Run[];
  const runOf = async (date: string, app = scheduler) => (await runs(app)).find((r) => r.date === date);

  it('shows a success, a retry (up_for_retry, then success on attempt 2) and a failure, and survives a restart', async () => {
    await proxy.down();
    await pipeline.trigger('2024-06-01');
    await until('qa to wait for its retry', async () => (await runOf('2024-06-01'))?.loads.qa?.state === 'up_for_retry', 30_000);
    const waiting = (await runOf('2024-06-01'))!;
    expect(waiting.loads.qa).toMatchObject({ state: 'up_for_retry', attempts: 1 });
    expect(waiting.loads.qa.error).toMatch(/ECONNREFUSED|connect/);
    await proxy.up();

    await until('every step to finish', async () => {
      const run = await runOf('2024-06-01');
      return ['dev', 'staging', 'qa'].every((env) => ['success', 'failed'].includes(run?.loads[env]?.state ?? ''));
    }, 30_000);
    const run = (await runOf('2024-06-01'))!;
    const rows = 20000 + 2008 + 4 + 504;
    expect(run.dump).toMatchObject({ state: 'success', attempts: 1, rows });
    expect(run.dump.bytes).toBeGreaterThan(1_000_000);
    expect(run.loads.dev).toMatchObject({ state: 'success', attempts: 1, rows });
    expect(run.loads.qa).toMatchObject({ state: 'success', attempts: 2, rows });
    expect(run.loads.staging).toMatchObject({ state: 'failed', attempts: 1 });
    expect(run.loads.staging.error).toContain('public.products."attrs"');

    // The ledger is in JetStream KV: a new scheduler process serves the same history.
    expect(await scheduler.stop()).toBe(0);
    scheduler = await pipeline.fleet.start('scheduler', { ...pipeline.commonEnv, SCHEDULE: '0 0 1 1 *' }, 'scheduler-again');
    expect(await runOf('2024-06-01')).toEqual(run);
  });

  it('lists runs newest first, with environments appearing as their loaders report; triggers the dumper refuses are no run', async () => {
    // Each is terminated unread by the dumper: a row for it would stay "dump queued" for ever.
    const subject = `${pipeline.namespace.prefix}replication.trigger`;
    for (const body of [{ date: '2024-02-30' }, { date: '2023-12-31' }, { date: '2024-06-03', force: true }, { Date: '2024-06-04' }, { date: null }]) {
      await plainPublish(subject, JSON.stringify(body), undefined, pipeline.namespace.url);
    }
    await pipeline.trigger('2024-06-02');
    await until('the second run to finish in dev', async () => (await runOf('2024-06-02'))?.loads.dev?.state === 'success', 30_000);
    const all = await runs();
    expect(all.map((r) => r.date)).toEqual(['2024-06-02', '2024-06-01']);
    expect(Object.keys(all[1].loads).sort()).toEqual(['dev', 'qa', 'staging']);
  });

  it('ignores announcements and events no app would take (the fold is never stuck on one), and dates that are no calendar date', async () => {
    const publish = (subject: string, body: unknown) => plainPublish(`${pipeline.namespace.prefix}${subject}`, JSON.stringify(body), undefined, pipeline.namespace.url);
    await publish('snapshot.failed', { date: '2024-06-05', error: 'boom', attempts: 3 });
    // Every loader rejects these: the failed dump must not turn into a success.
    await publish('snapshot.ready', { snapshotId: 'not-a-snapshot', date: '2024-06-05' });
    await publish('snapshot.ready', { snapshotId: '20240605-0badc0de', date: '2024-06-05', location: '/x/prod_snapshot_20240605-0badc0de', createdAt: '2024-06-05T00:00:00Z', tables: [null] });
    await publish('snapshot.failed', { date: '2024-13-45', error: 'boom', attempts: 1 });
    // An event after them is folded: nothing before it holds the fold back.
    await publish('snapshot.failed', { date: '2024-06-06', error: 'later', attempts: 1 });
    await until('the later event to be folded', async () => (await runOf('2024-06-06'))?.dump.state === 'failed', 15_000);
    expect((await runOf('2024-06-05'))?.dump).toMatchObject({ state: 'failed', error: 'boom' });
    expect((await runs()).map((r) => r.date)).not.toContain('2024-13-45');
  });
});
