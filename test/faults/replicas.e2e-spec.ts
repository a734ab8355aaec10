import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import type { RunningApp } from '../support/apps';
import { consumerBacklog } from '../support/consumers';
import { tableContent, type TestDatabase } from '../support/databases';
import { DEMO_TABLES } from '../support/fixtures';
import { loaderSessions, PipelineHarness, slowLoadSql, until } from '../support/pipeline';
import { ofSubject, streamEvents } from '../support/stream-events';

/** Every "loading snapshot ..." line the replicas logged: each one is a load that started (or retried). */
const loadingLines = (replicas: RunningApp[]) =>
  replicas.flatMap((replica) =>
    replica.output
      .split('\n')
      .filter((line) => line.includes('loading snapshot'))
      .map((line) => `${replica.name}: ${line.trim()}`),
  );

async function ledgerOf(db: TestDatabase): Promise<{ snapshot_id: string; snapshot_date: string }[]> {
  return db.query<{ snapshot_id: string; snapshot_date: string }>(
    "SELECT snapshot_id, to_char(snapshot_date, 'YYYY-MM-DD') AS snapshot_date FROM db_fanout.loaded_snapshots ORDER BY snapshot_date",
  );
}

async function waitSettled(pipeline: PipelineHarness, durable: string): Promise<void> {
  await until(`consumer ${durable} to settle`, async () => {
    const backlog = await consumerBacklog(pipeline.namespace.stream, durable);
    return backlog.pending === 0 && backlog.unacked === 0;
  });
}

/** Replicas of one environment's loader share its consumer: a snapshot is loaded once per environment. */
describe('loader replicas of one environment', () => {
  let pipeline: PipelineHarness;

  beforeAll(async () => {
    pipeline = await PipelineHarness.create('replicas', {
      environments: ['dev'],
      // Each load takes over a second, so the three snapshots are in the replicas' hands at once.
      targetSql: { dev: slowLoadSql('products', 1) },
    });
  });
  afterAll(() => pipeline?.cleanup());

  it('three replicas load each of three snapshots exactly once', async () => {
    const dev = pipeline.targets.dev;
    const replicas = await Promise.all([1, 2, 3].map((n) => pipeline.startLoader('dev', {}, `loader-dev-${n}`)));
    await pipeline.startDumper();
    const dates = ['2024-04-01', '2024-04-02', '2024-04-03'];
    // Production changes between the dumps, so each snapshot differs and only the last equals it.
    for (const [index, date] of dates.entries()) {
      if (index > 0) await pipeline.source.query('INSERT INTO public.categories (id, parent_id, label) VALUES ($1, 1, $2)', [100 + index, `added before ${date}`]);
      await pipeline.trigger(date);
      await pipeline.events.waitFor(`the snapshot of ${date}`, () => pipeline.readyFor(date) !== undefined);
    }

    await pipeline.events.waitFor('three snapshots loaded in dev', () => pipeline.loadedIn('dev').length >= 3);
    await waitSettled(pipeline, 'loader-dev');
    // Room for a (wrong) second load of any of them to show up.
    await new Promise((resolve) => setTimeout(resolve, 2_500));

    const events = await streamEvents(pipeline.namespace.url, pipeline.namespace.stream, pipeline.namespace.prefix);
    const ready = ofSubject(events, 'snapshot.ready');
    expect(ready.map((e) => e.date).sort()).toEqual(dates);
    const readyIds = ready.map((e) => String(e.snapshotId)).sort();

    const loaded = ofSubject(events, 'snapshot.loaded').filter((e) => e.environment === 'dev');
    expect(loaded).toHaveLength(3);
    expect(loaded.map((e) => String(e.snapshotId)).sort()).toEqual(readyIds);
    // What a subscriber saw: three announcements, none repeated.
    expect(pipeline.loadedIn('dev').map((e) => String(e.snapshotId)).sort()).toEqual(readyIds);
    expect(ofSubject(events, 'snapshot.load.failed')).toEqual([]);

    const ledger = await ledgerOf(dev);
    expect(ledger.map((r) => r.snapshot_id).sort()).toEqual(readyIds);
    expect(ledger.map((r) => r.snapshot_date)).toEqual(dates);
    // dev ends on the latest snapshot: production as it is now.
    for (const table of DEMO_TABLES) expect(await tableContent(dev, table)).toEqual(await tableContent(pipeline.source, table));

    expect(loadingLines(replicas)).toHaveLength(3);
    expect(replicas.every((replica) => !replica.output.includes('already loaded'))).toBe(true);
  });
});

/** A load that takes longer than the broker's ack wait stays with the replica running it. */
describe('a load longer than the ack wait, with two replicas', () => {
  let pipeline: PipelineHarness;

  beforeAll(async () => {
    pipeline = await PipelineHarness.create('ackwait', {
      environments: ['staging'],
      // The COPY into products takes 4 s: four times the ack wait.
      targetSql: { staging: slowLoadSql('products', 4) },
      env: { ACK_WAIT: '1s' },
    });
  });
  afterAll(() => pipeline?.cleanup());

  it('is not redelivered to the other replica while it runs', async () => {
    const staging = pipeline.targets.staging;
    const replicas = [await pipeline.startLoader('staging', {}, 'loader-staging-1'), await pipeline.startLoader('staging', {}, 'loader-staging-2')];

    // The premise: the consumer really has a 1 s ack wait.
    const nc = await connect({ servers: pipeline.namespace.url });
    try {
      const info = await (await jetstreamManager(nc)).consumers.info(pipeline.namespace.stream, 'loader-staging');
      expect(info.config.ack_wait).toBe(1_000_000_000);
    } finally {
      await nc.close();
    }

    await pipeline.startDumper();
    await pipeline.trigger('2024-04-10');
    await until('the staging load to be inside its slow COPY', async () => (await loaderSessions(staging)).some((s) => s.wait_event === 'PgSleep'));

    // While the load runs (well past the ack wait), the message stays with one replica.
    const samples: { pending: number; unacked: number; redelivered: number }[] = [];
    while (pipeline.loadedIn('staging').length === 0 && samples.length < 40) {
      samples.push(await consumerBacklog(pipeline.namespace.stream, 'loader-staging'));
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    await pipeline.events.waitFor('staging loaded', () => pipeline.loadedIn('staging').length >= 1);
    await waitSettled(pipeline, 'loader-staging');
    // Several ack waits more, for a (wrong) redelivery to show up.
    await new Promise((resolve) => setTimeout(resolve, 3_000));

    expect(samples.length).toBeGreaterThanOrEqual(8);
    expect(samples.filter((s) => s.redelivered > 0)).toEqual([]);

    const events = await streamEvents(pipeline.namespace.url, pipeline.namespace.stream, pipeline.namespace.prefix);
    const ready = ofSubject(events, 'snapshot.ready');
    expect(ready).toHaveLength(1);
    const loaded = ofSubject(events, 'snapshot.loaded').filter((e) => e.environment === 'staging');
    expect(loaded).toHaveLength(1);
    expect(loaded[0]).toMatchObject({ snapshotId: ready[0].snapshotId, attempts: 1 });
    expect(Number(loaded[0].durationMs)).toBeGreaterThanOrEqual(4_000);
    expect(pipeline.loadedIn('staging')).toHaveLength(1);
    expect(ofSubject(events, 'snapshot.load.failed')).toEqual([]);

    expect(await ledgerOf(staging)).toEqual([{ snapshot_id: ready[0].snapshotId, snapshot_date: '2024-04-10' }]);
    for (const table of DEMO_TABLES) expect(await tableContent(staging, table)).toEqual(await tableContent(pipeline.source, table));

    expect(loadingLines(replicas)).toHaveLength(1);
  });
});
