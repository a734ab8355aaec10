import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { jetstreamManager, RetentionPolicy, StorageType } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { connect, nanos } from '@nats-io/transport-node';
import { AppFleet, type RunningApp } from './support/apps';
import { natsNamespace, type NatsNamespace, plainPublish } from './support/nats';
import { OwnNatsServer } from './support/nats-server';
import { loaderSessions, PipelineHarness, slowLoadSql, until } from './support/pipeline';
import { ofSubject, streamEvents } from './support/stream-events';

const BIN = join(__dirname, '..', 'bin', 'db-fanout.js');

interface Step {
  state: string;
  attempts: number;
  startedAt?: string;
  endedAt?: string;
  snapshotId?: string;
  supersededBy?: string;
  rows?: number;
}
interface Run {
  date: string;
  triggeredAt?: string;
  dump: Step;
  loads: Record<string, Step>;
  earlierSnapshots?: string[];
}

/** `db-fanout status` as a user runs it: the table's cells by date, split on the column gaps. */
function status(env: Record<string, string>): Promise<{ code: number | null; rows: Record<string, string[]>; header: string[]; stdout: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, 'status'], { env: { PATH: process.env.PATH ?? '', ...env } });
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.on('exit', (code) => {
      const lines = stdout.trim().split('\n').map((line) => line.split(/ {2,}/));
      resolve({ code, header: lines[0], rows: Object.fromEntries(lines.slice(1).map((cells) => [cells[0], cells])), stdout });
    });
  });
}

/** The run history on the scheduler's GET /api/runs. */
async function apiRuns(app: RunningApp): Promise<Run[]> {
  return (await (await fetch(`http://127.0.0.1:${app.port}/api/runs`)).json()) as Run[];
}

/** A fixed shuffle (seeded), so a failure can be replayed. */
function shuffled<T>(items: T[], seed: number): T[] {
  const out = [...items];
  let state = seed;
  for (let i = out.length - 1; i > 0; i--) {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    const j = state % (i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

type Event = [string, Record<string, unknown>];

describe('the run history, whatever the order and number of the events', () => {
  const fleet = new AppFleet();
  let namespace: NatsNamespace;
  let scheduler: RunningApp;

  beforeAll(async () => {
    namespace = natsNamespace('history');
    scheduler = await fleet.start('scheduler', { ...namespace.env, SCHEDULE: '0 0 1 1 *' });
  });
  afterAll(async () => {
    await fleet.stopAll();
    await namespace?.cleanup();
  });

  // Each event published as is, without a message id: what the stream holds when a publish was
  // retried after the duplicate window, or a redelivered message announced its start again.
  const publish = async (events: Event[]) => {
    for (const [subject, body] of events) await plainPublish(`${namespace.prefix}${subject}`, JSON.stringify(body), undefined, namespace.url);
  };
  const iso = (ms: number) => new Date(ms).toISOString();
  const table = (name: string) => ({ name, file: `0001_${name}.csv`, rows: 7, bytes: 70, sha256: 'a'.repeat(64) });

  it('replayed out of order and twice, events end each step in its right state in the ledger, /api/runs and db-fanout status', async () => {
    const date = '2024-05-01';
    const S = '20240501-0a0a0a0a';
    const t = Date.now() - 3_600_000;
    const load = (environment: string, subject: string, extra: Record<string, unknown>): Event => [subject, { snapshotId: S, environment, ...extra }];
    const events: Event[] = [
      ['snapshot.dump.started', { date, attempt: 1, startedAt: iso(t + 1_000) }],
      ['snapshot.dump.retrying', { date, attempt: 1, error: 'terminating connection', retryInMs: 500 }],
      ['snapshot.dump.started', { date, attempt: 2, startedAt: iso(t + 3_000) }],
      ['snapshot.ready', { snapshotId: S, date, location: `/tmp/prod_snapshot_${S}`, createdAt: iso(t + 5_000), takenAt: iso(t + 4_000), tables: [table('public.a')] }],
      load('dev', 'snapshot.load.started', { attempt: 1, startedAt: iso(t + 6_000) }),
      load('dev', 'snapshot.load.retrying', { attempt: 1, error: 'connect ECONNREFUSED', retryInMs: 500 }),
      load('dev', 'snapshot.load.started', { attempt: 2, startedAt: iso(t + 8_000) }),
      load('dev', 'snapshot.loaded', { rows: 7, durationMs: 900, attempts: 2 }),
      load('qa', 'snapshot.load.started', { attempt: 1, startedAt: iso(t + 6_000) }),
      load('qa', 'snapshot.load.skipped', { reason: 'superseded', by: '20240502-0b0b0b0b' }),
      load('staging', 'snapshot.load.started', { attempt: 1, startedAt: iso(t + 6_000) }),
      load('staging', 'snapshot.load.failed', { error: 'column x is missing', code: '42703', attempts: 1 }),
      load('ops', 'snapshot.load.started', { attempt: 1, startedAt: iso(t + 6_000) }),
      load('ops', 'snapshot.load.skipped', { reason: 'already-loaded' }),
    ];
    // The trigger comes first, as in the stream (the dumper acts on it); everything else in any order, twice.
    await plainPublish(`${namespace.prefix}replication.trigger`, JSON.stringify({ date }), `manual-${date}`, namespace.url);
    await publish([...shuffled(events, 7), ...shuffled(events, 11)]);

    const expected = {
      dump: { state: 'success', attempts: 2, snapshotId: S, startedAt: iso(t + 1_000), endedAt: iso(t + 5_000), takenAt: iso(t + 4_000), rows: 7, bytes: 70 },
      loads: {
        dev: { state: 'success', attempts: 2, snapshotId: S, startedAt: iso(t + 6_000), rows: 7 },
        qa: { state: 'superseded', attempts: 1, snapshotId: S, supersededBy: '20240502-0b0b0b0b' },
        staging: { state: 'failed', attempts: 1, snapshotId: S, error: 'column x is missing' },
        ops: { state: 'success', attempts: 1, snapshotId: S },
      },
    };
    let run: Run | undefined;
    await until('the ledger to fold all 29 events', async () => {
      // The backlog first: the fold acks an event after its run is written, so a run read once the
      // backlog is empty holds every event (read before, it could miss the last few folded meanwhile).
      if ((await ledgerBacklog(namespace.url, namespace.stream)) !== 0) return false;
      run = (await apiRuns(scheduler)).find((r) => r.date === date);
      return Object.keys(run?.loads ?? {}).length === 4;
    }, 30_000);
    expect(run).toMatchObject(expected);

    // The ledger itself (the KV bucket) holds the same.
    const nc = await connect({ servers: namespace.url });
    try {
      const kv = await new Kvm(nc).open(`${namespace.stream}_RUNS`);
      expect((await kv.get(date))!.json()).toEqual(run);
    } finally {
      await nc.close();
    }

    const shown = await status(namespace.env);
    expect(shown.code).toBe(0);
    expect(shown.header).toEqual(['date', 'dump', 'dev', 'ops', 'qa', 'staging']);
    expect(shown.rows[date].map((cell) => cell.split(' ')[0])).toEqual([date, 'success', 'success', 'success', 'superseded', 'failed']);
    expect(shown.rows[date][1]).toContain('(2 tries)');
  });

  it('a re-run of a date shows its own snapshot and times, whatever the earlier run reports late', async () => {
    const date = '2024-05-02';
    const [SA, SB] = ['20240502-0c0c0c0c', '20240502-0d0d0d0d'];
    const t = Date.now() - 3_600_000;
    const first: Event[] = [
      ['snapshot.dump.started', { date, attempt: 1, startedAt: iso(t) }],
      ['snapshot.ready', { snapshotId: SA, date, location: `/tmp/prod_snapshot_${SA}`, createdAt: iso(t + 2_000), takenAt: iso(t + 1_000), tables: [table('public.a')] }],
      ['snapshot.load.started', { snapshotId: SA, environment: 'dev', attempt: 1, startedAt: iso(t + 3_000) }],
      ['snapshot.loaded', { snapshotId: SA, environment: 'dev', rows: 7, durationMs: 500, attempts: 1 }],
    ];
    await plainPublish(`${namespace.prefix}replication.trigger`, JSON.stringify({ date }), `manual-${date}-1`, namespace.url);
    await publish(first);
    await until('the first run to be folded', async () => (await apiRuns(scheduler)).find((r) => r.date === date)?.loads.dev?.state === 'success', 30_000);

    await plainPublish(`${namespace.prefix}replication.trigger`, JSON.stringify({ date }), `manual-${date}-2`, namespace.url);
    const u = Date.now() + 1_000; // the re-run's dump starts after its trigger
    const second: Event[] = [
      ['snapshot.dump.started', { date, attempt: 1, startedAt: iso(u) }],
      ['snapshot.ready', { snapshotId: SB, date, location: `/tmp/prod_snapshot_${SB}`, createdAt: iso(u + 2_000), takenAt: iso(u + 1_000), tables: [table('public.a')] }],
      ['snapshot.load.started', { snapshotId: SB, environment: 'dev', attempt: 1, startedAt: iso(u + 3_000) }],
      ['snapshot.loaded', { snapshotId: SB, environment: 'dev', rows: 7, durationMs: 500, attempts: 1 }],
    ];
    // The second run's events in order (its snapshot.ready is what loads act on), the first run's again, late.
    await publish([...second, ...shuffled(first, 3), ...shuffled(first, 5)]);
    await until('the ledger to fold every event', async () => (await ledgerBacklog(namespace.url, namespace.stream)) === 0, 30_000);

    const run = (await apiRuns(scheduler)).find((r) => r.date === date)!;
    expect(run).toMatchObject({
      dump: { state: 'success', snapshotId: SB, startedAt: iso(u), endedAt: iso(u + 2_000), takenAt: iso(u + 1_000) },
      loads: { dev: { state: 'success', snapshotId: SB, startedAt: iso(u + 3_000) } },
      earlierSnapshots: [SA],
    });
    expect(Date.parse(run.triggeredAt!)).toBeGreaterThan(t + 3_000);
    const shown = await status(namespace.env);
    expect(shown.rows[date].slice(0, 3).map((cell) => cell.split(' ')[0])).toEqual([date, 'success', 'success']);
  });

});

/** NATS away longer than the stream's duplicate window while a load runs: no step is left `running`. */
describe('the run history across a NATS outage longer than the duplicate window', () => {
  const DUPLICATE_WINDOW_MS = 1_000;
  let nats: OwnNatsServer;
  let pipeline: PipelineHarness;
  let scheduler: RunningApp;

  beforeAll(async () => {
    nats = await OwnNatsServer.start();
    pipeline = await PipelineHarness.create('historyout', {
      environments: ['dev', 'qa'],
      natsUrl: nats.url,
      targetSql: { dev: slowLoadSql('products', 3) },
      env: { ACK_WAIT: '2s' },
    });
    // The apps leave an existing stream as it is: this one forgets message ids after 1 s instead of 2 minutes.
    const nc = await connect({ servers: nats.url });
    try {
      await (await jetstreamManager(nc)).streams.add({
        name: pipeline.namespace.stream,
        subjects: [`${pipeline.namespace.prefix}replication.trigger`, `${pipeline.namespace.prefix}snapshot.>`],
        retention: RetentionPolicy.Limits,
        storage: StorageType.File,
        duplicate_window: nanos(DUPLICATE_WINDOW_MS),
      });
    } finally {
      await nc.close();
    }
    scheduler = await pipeline.fleet.start('scheduler', { ...pipeline.commonEnv, SCHEDULE: '0 0 1 1 *' });
    await pipeline.startDumper();
    await pipeline.startLoader('dev');
    await pipeline.startLoader('qa');
  });
  afterAll(async () => {
    await pipeline?.cleanup();
    await nats?.destroy();
  });

  it('every step of the run ends finished, in /api/runs and db-fanout status', async () => {
    const date = '2024-08-01';
    await pipeline.trigger(date);
    await until('the dev load to be inside its COPY', async () => (await loaderSessions(pipeline.targets.dev)).some((s) => s.wait_event === 'PgSleep'), 30_000);
    await nats.stop();
    await new Promise((resolve) => setTimeout(resolve, 4 * DUPLICATE_WINDOW_MS));
    await nats.restart();

    const stored = () => streamEvents(nats.url, pipeline.namespace.stream, pipeline.namespace.prefix);
    await until('both environments to announce their load', async () => {
      const events = await stored();
      const ready = ofSubject(events, 'snapshot.ready')[0];
      return Boolean(ready) && ofSubject(events, 'snapshot.loaded').filter((e) => e.snapshotId === ready.snapshotId).length >= 2;
    }, 60_000);
    // Past the ack wait: whatever is redelivered (and announced again) has been by now.
    await new Promise((resolve) => setTimeout(resolve, 6_000));
    let run: Run | undefined;
    await until('the ledger to show every step finished', async () => {
      run = (await apiRuns(scheduler)).find((r) => r.date === date);
      return run?.dump.state === 'success' && run.loads.dev?.state === 'success' && run.loads.qa?.state === 'success';
    }, 30_000);
    expect(run).toMatchObject({ dump: { state: 'success' }, loads: { dev: { state: 'success' }, qa: { state: 'success' } } });
    // What a redelivery of the snapshot does after the window (the "success back to running"):
    // it announces attempt 1 again under the same message id, which the stream has forgotten by now.
    const events = await stored();
    const ready = ofSubject(events, 'snapshot.ready')[0];
    const started = ofSubject(events, 'snapshot.load.started').find((e) => e.environment === 'dev')!;
    await plainPublish(`${pipeline.namespace.prefix}snapshot.load.started`, JSON.stringify({ ...started, startedAt: new Date().toISOString() }), `load-started:${String(ready.snapshotId)}:dev:1`, nats.url);
    await until('the repeated start to be stored and folded', async () => {
      const devStarts = ofSubject(await stored(), 'snapshot.load.started').filter((e) => e.environment === 'dev' && e.attempt === 1);
      return devStarts.length >= 2 && (await ledgerBacklog(nats.url, pipeline.namespace.stream)) === 0;
    }, 30_000);

    run = (await apiRuns(scheduler)).find((r) => r.date === date);
    expect(run).toMatchObject({ dump: { state: 'success' }, loads: { dev: { state: 'success' }, qa: { state: 'success' } } });
    const shown = await status(pipeline.namespace.env);
    expect(shown.rows[date].map((cell) => cell.split(' ')[0])).toEqual([date, 'success', 'success', 'success']);
  });
});

/** Events the run ledger's consumer has not folded yet. */
async function ledgerBacklog(url: string, stream: string): Promise<number> {
  const nc = await connect({ servers: url });
  try {
    const info = await (await jetstreamManager(nc)).consumers.info(stream, 'run-ledger');
    return info.num_pending + info.num_ack_pending;
  } finally {
    await nc.close();
  }
}
