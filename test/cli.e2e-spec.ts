import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { streamSubjects } from '@app/common/contract';
import type { RunningApp } from './support/apps';
import { natsNamespace } from './support/nats';
import { streamEvents } from './support/stream-events';
import { PipelineHarness, until } from './support/pipeline';
import { runCli as cli } from './support/cli';

describe('the db-fanout CLI', () => {
  it('explains itself, and rejects wrong usage with exit code 2 and a message naming the problem', async () => {
    const help = await cli(['--help'], {});
    expect(help.code).toBe(0);
    for (const command of ['trigger', 'status', 'runs', 'reload', 'backfill']) expect(help.stdout).toContain(`  ${command}`);
    expect(await cli(['frobnicate'], {})).toMatchObject({ code: 2, stderr: expect.stringContaining('unknown command "frobnicate"') });
    expect(await cli(['trigger', '--date', '2024-02-30'], {})).toMatchObject({ code: 2, stderr: expect.stringContaining('--date must be a date YYYY-MM-DD') });
    expect(await cli(['trigger', '--force'], {})).toMatchObject({ code: 2, stderr: expect.stringContaining('unknown option --force') });
    expect(await cli(['backfill', '--from', '2024-01-05'], {})).toMatchObject({ code: 2, stderr: expect.stringContaining('backfill needs --from and --to') });
    // Refused before connecting (no NATS_URL answers here): nothing of the range is queued.
    expect(await cli(['backfill', '--from', '2014-01-01', '--to', '2024-01-09'], { NATS_URL: 'nats://127.0.0.1:1' })).toMatchObject({
      code: 2,
      stderr: expect.stringContaining('a backfill is limited to ten years (3660 days); 2014-01-01 to 2024-01-09 is 3661'),
    });
    expect(await cli(['reload'], {})).toMatchObject({ code: 2, stderr: expect.stringContaining('reload needs --env NAME') });
    expect(await cli(['trigger', '--help'], {})).toMatchObject({ code: 0, stdout: expect.stringContaining('trigger [--date YYYY-MM-DD]') });
  });

  it('exits 1 with a clear message when NATS cannot be reached', async () => {
    const result = await cli(['status'], { NATS_URL: 'nats://127.0.0.1:1' });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('cannot connect to NATS at nats://127.0.0.1:1');
  });

  it('reload: a wrong NATS_STREAM or NATS_SUBJECT_PREFIX is named, not read as "no snapshot has been announced yet" or a broker error', async () => {
    const namespace = natsNamespace('clireload');
    try {
      const nc = await connect({ servers: namespace.url });
      try {
        await (await jetstreamManager(nc)).streams.add({ name: namespace.stream, subjects: streamSubjects(namespace.prefix) });
      } finally {
        await nc.close();
      }
      const ready = `${namespace.prefix}snapshot.ready`;
      for (const args of [['reload', '--env', 'dev'], ['reload', '--env', 'dev', '--snapshot', '20240101-deadbeef']]) {
        expect(await cli(args, { ...namespace.env, NATS_STREAM: 'NO_SUCH_STREAM' })).toMatchObject({
          code: 1,
          stderr: `db-fanout reload: ${ready} is stored in stream ${namespace.stream}, not in NATS_STREAM NO_SUCH_STREAM: set NATS_STREAM as the apps have it\n`,
        });
        expect(await cli(args, { ...namespace.env, NATS_SUBJECT_PREFIX: 'typo_no_stream.' })).toMatchObject({
          code: 1,
          stderr: 'db-fanout reload: no stream stores typo_no_stream.snapshot.ready: check NATS_SUBJECT_PREFIX and NATS_STREAM (the apps create the stream when they first start)\n',
        });
      }
      // Right settings, nothing announced yet: that is what it says.
      expect(await cli(['reload', '--env', 'dev'], namespace.env)).toMatchObject({ code: 1, stderr: expect.stringContaining('no snapshot has been announced yet') });
    } finally {
      await namespace.cleanup();
    }
  });

  describe('against a running pipeline', () => {
    let pipeline: PipelineHarness;
    let env: Record<string, string>;
    let scheduler: RunningApp;

    beforeAll(async () => {
      pipeline = await PipelineHarness.create('cli', { environments: ['dev'] });
      env = pipeline.namespace.env;
      scheduler = await pipeline.fleet.start('scheduler', { ...pipeline.commonEnv, SCHEDULE: '0 0 1 1 *' });
      await pipeline.startDumper();
      await pipeline.startLoader('dev');
    });
    afterAll(() => pipeline?.cleanup());

    it('trigger: replicates the date, and runs/status show the run', async () => {
      const triggered = await cli(['trigger', '--date', '2024-07-01'], env);
      expect(triggered).toMatchObject({ code: 0, stdout: expect.stringContaining('triggered replication for 2024-07-01') });
      await pipeline.events.waitFor('dev to load 2024-07-01', () => pipeline.loadedIn('dev').length === 1);

      let runs: { date: string; dump: { state: string }; loads: Record<string, { state: string }> }[] = [];
      await until('the ledger to record the load', async () => {
        const result = await cli(['runs', '--json'], env);
        runs = JSON.parse(result.stdout) as typeof runs;
        return runs[0]?.loads.dev?.state === 'success';
      });
      expect(runs).toEqual([expect.objectContaining({ date: '2024-07-01', dump: expect.objectContaining({ state: 'success' }) })]);

      const status = await cli(['status'], env);
      expect(status.code).toBe(0);
      const [header, row] = status.stdout.trim().split('\n');
      expect(header.split(/\s+/)).toEqual(['date', 'dump', 'dev']);
      expect(row).toMatch(/^2024-07-01\s+success \d+\.\ds\s+success \d+\.\ds$/);
      expect((await cli(['runs', '--since', '2024-07-02', '--json'], env)).stdout.trim()).toBe('[]');
    });

    it('backfill: triggers each day of the range, oldest first; the same backfill again says it queued nothing new', async () => {
      const result = await cli(['backfill', '--from', '2024-07-02', '--to', '2024-07-04'], env);
      expect(result.code).toBe(0);
      expect(result.stdout).toContain('backfill of 3 day(s) queued');
      const again = await cli(['backfill', '--from', '2024-07-02', '--to', '2024-07-04'], env);
      expect(again.code).toBe(0);
      expect(again.stdout).toContain("2024-07-03 already queued by a backfill within the stream's duplicate window: not queued again");
      expect(again.stdout).toContain('backfill of 0 day(s) queued, 3 already queued');
      await pipeline.events.waitFor('three more snapshots', (c) => c.of('snapshot.ready').length === 4);
      expect(pipeline.events.of('snapshot.ready').map((e) => e.date)).toEqual(['2024-07-01', '2024-07-02', '2024-07-03', '2024-07-04']);
    });

    it('trigger and backfill refuse a date before START_DATE (the dumper would drop it), and name a stream or prefix that stores nothing', async () => {
      const early = await cli(['trigger', '--date', '2023-05-01'], { ...env, START_DATE: '2024-01-01' });
      expect(early).toMatchObject({ code: 2, stderr: expect.stringContaining('date 2023-05-01 is before START_DATE 2024-01-01: the dumper would refuse it') });
      const backfill = await cli(['backfill', '--from', '2023-12-30', '--to', '2024-01-01'], { ...env, START_DATE: '2024-01-01' });
      expect(backfill).toMatchObject({ code: 2, stderr: expect.stringContaining('--from 2023-12-30 is before START_DATE 2024-01-01') });
      expect(backfill.stdout).not.toContain('triggered');
      const lateStart = await cli(['trigger', '--date', '2024-06-01'], { ...env, START_DATE: '2024-06-02' });
      expect(lateStart.code).toBe(2);

      const otherStream = await cli(['trigger', '--date', '2024-07-06'], { ...env, NATS_STREAM: 'NO_SUCH_STREAM' });
      expect(otherStream).toMatchObject({ code: 1, stderr: expect.stringContaining(`not in NATS_STREAM NO_SUCH_STREAM: set NATS_STREAM as the apps have it`) });
      expect(otherStream.stderr).toContain(`is stored in stream ${env.NATS_STREAM}`);
      const typo = await cli(['trigger', '--date', '2024-07-06'], { ...env, NATS_SUBJECT_PREFIX: 'typo_no_stream.' });
      expect(typo).toMatchObject({ code: 1, stderr: expect.stringContaining('no stream stores typo_no_stream.replication.trigger: check NATS_SUBJECT_PREFIX and NATS_STREAM') });
    });

    it('reload: loads one environment again without dumping, the latest snapshot or a given one', async () => {
      await pipeline.events.waitFor('dev to catch up', () => pipeline.loadedIn('dev').length === 4);
      const dumps = pipeline.events.of('snapshot.ready').length;
      const latest = pipeline.readyFor('2024-07-04')!.snapshotId;
      const first = pipeline.readyFor('2024-07-01')!.snapshotId;

      expect(await cli(['reload', '--env', 'dev'], env)).toMatchObject({ code: 0, stdout: expect.stringContaining(`asked dev to reload snapshot ${String(latest)}`) });
      await pipeline.events.waitFor('the reload', () => pipeline.loadedIn('dev').length === 5);
      expect(pipeline.loadedIn('dev')[4].snapshotId).toBe(latest);
      // Its events say which request they answer; the run history shows the reload as the step's latest try.
      const reloadSequence = pipeline.loadedIn('dev')[4].reloadSequence;
      expect(reloadSequence).toEqual(expect.any(Number));
      expect(pipeline.loadedIn('dev').slice(0, 4).map((e) => e.reloadSequence)).toEqual([undefined, undefined, undefined, undefined]);
      await until('the run history to show the reload', async () => {
        const runs = JSON.parse((await cli(['runs', '--since', '2024-07-04', '--json'], env)).stdout) as { date: string; loads: Record<string, { reloadSequence?: number; state: string }> }[];
        const step = runs.find((run) => run.date === '2024-07-04')?.loads.dev;
        return step?.reloadSequence === reloadSequence && step?.state === 'success';
      });

      // An older snapshot, by id: loaded even though the environment holds a newer one.
      expect((await cli(['reload', '--env', 'dev', '--snapshot', String(first)], env)).code).toBe(0);
      await pipeline.events.waitFor('the reload of the first snapshot', () => pipeline.loadedIn('dev').length === 6);
      expect(pipeline.loadedIn('dev')[5].snapshotId).toBe(first);
      expect(pipeline.events.of('snapshot.ready')).toHaveLength(dumps);
      const ledger = await pipeline.targets.dev.query<{ snapshot_id: string }>('SELECT snapshot_id FROM db_fanout.loaded_snapshots ORDER BY loaded_at DESC LIMIT 1');
      expect(ledger[0].snapshot_id).toBe(first);

      const missing = await cli(['reload', '--env', 'dev', '--snapshot', '20000101-deadbeef'], env);
      expect(missing).toMatchObject({ code: 1, stderr: expect.stringContaining('snapshot 20000101-deadbeef is not in stream') });

      // A typo in --env: no loader would ever take the request, so none is published.
      const before = (await streamEvents(pipeline.namespace.url, pipeline.namespace.stream, pipeline.namespace.prefix)).length;
      const typo = await cli(['reload', '--env', 'deb'], env);
      expect(typo).toMatchObject({ code: 1, stderr: expect.stringContaining(`no loader of deb has started on stream ${pipeline.namespace.stream} (no consumer loader-deb-reload)`) });
      expect(typo.stderr).toMatch(/environments with loaders: [a-z0-9, -]*dev/);
      expect((await streamEvents(pipeline.namespace.url, pipeline.namespace.stream, pipeline.namespace.prefix)).length).toBe(before);
    });

    it('status and runs say so when the history is behind the stream (the scheduler is down)', async () => {
      await until('the history to catch up', async () => (await cli(['status'], env)).stderr === '');
      await scheduler.stop();
      expect(await cli(['trigger', '--date', '2024-07-08'], env)).toMatchObject({ code: 0 });
      await pipeline.events.waitFor('the dump of 2024-07-08', () => pipeline.readyFor('2024-07-08') !== undefined);
      const status = await cli(['status'], env);
      expect(status.code).toBe(0);
      expect(status.stdout).not.toContain('2024-07-08');
      expect(status.stderr).toMatch(/the run history is \d+ event\(s\) behind the stream: is the scheduler running\?/);
      const json = await cli(['runs', '--json'], env);
      expect(() => JSON.parse(json.stdout) as unknown).not.toThrow();
      expect(json.stderr).toContain('behind the stream');
    });
  });
});
