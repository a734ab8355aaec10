import { tableContent } from '../support/databases';
import { DEMO_TABLES } from '../support/fixtures';
import { OwnNatsServer } from '../support/nats-server';
import { loaderSessions, PipelineHarness, slowLoadSql, until } from '../support/pipeline';
import { ofSubject, type StoredEvent, streamEvents } from '../support/stream-events';
import { RunningApp } from '../support/apps';
import { natsNamespace } from '../support/nats';
import { consumerBacklog, useUpDeliveries } from '../support/consumers';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { streamSubjects, SUBJECTS } from '../../libs/common/src/contract';

const loadedFor = (events: StoredEvent[], snapshotId: unknown) => ofSubject(events, 'snapshot.loaded').filter((e) => e.snapshotId === snapshotId);

/** The broker restarts (idle, and in the middle of a load): every app reconnects by itself. */
describe('a NATS server restart', () => {
  let nats: OwnNatsServer;
  let pipeline: PipelineHarness;
  let apps: RunningApp[];

  beforeAll(async () => {
    nats = await OwnNatsServer.start();
    pipeline = await PipelineHarness.create('natsrestart', {
      environments: ['dev', 'qa'],
      natsUrl: nats.url,
      targetSql: { dev: slowLoadSql('products', 3) },
      env: { ACK_WAIT: '2s' },
    });
    apps = [await pipeline.startDumper(), await pipeline.startLoader('dev'), await pipeline.startLoader('qa')];
  });
  afterAll(async () => {
    await pipeline?.cleanup();
    await nats?.destroy();
  });

  const stored = () => streamEvents(nats.url, pipeline.namespace.stream, pipeline.namespace.prefix);
  async function expectAllHealthy(): Promise<void> {
    await until('every app to report healthy again', async () => (await Promise.all(apps.map((app) => app.health()))).every((s) => s === 200), 20_000);
  }

  it('while idle: the apps reconnect and the next trigger is replicated everywhere', async () => {
    await nats.restart(500);
    await expectAllHealthy();
    expect(apps.every((app) => app.exitCode === undefined)).toBe(true);

    await pipeline.trigger('2024-03-01');
    await until('both environments to load', async () => {
      const events = await stored();
      const ready = ofSubject(events, 'snapshot.ready')[0];
      return Boolean(ready) && loadedFor(events, ready.snapshotId).length === 2;
    });
  });

  it('during a load: the load completes, is announced once per environment, and nothing is done twice', async () => {
    await pipeline.trigger('2024-03-02');
    await until('the dev load to be inside its COPY', async () => (await loaderSessions(pipeline.targets.dev)).some((s) => s.wait_event === 'PgSleep'));
    await nats.restart(1_000);
    await expectAllHealthy();

    let events: StoredEvent[] = [];
    await until('both environments to load the second snapshot', async () => {
      events = await stored();
      const second = ofSubject(events, 'snapshot.ready').find((e) => e.date === '2024-03-02');
      return Boolean(second) && loadedFor(events, second!.snapshotId).length === 2;
    }, 40_000);
    // Past the ack wait: a message that was not acked would have been redelivered by now.
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    events = await stored();

    const ready = ofSubject(events, 'snapshot.ready');
    expect(ready.map((e) => e.date)).toEqual(['2024-03-01', '2024-03-02']);
    for (const snapshot of ready) {
      expect(loadedFor(events, snapshot.snapshotId).map((e) => e.environment).sort()).toEqual(['dev', 'qa']);
    }
    expect(ofSubject(events, 'snapshot.load.failed')).toEqual([]);
    for (const env of ['dev', 'qa']) {
      const ledger = await pipeline.targets[env].query('SELECT snapshot_id FROM db_fanout.loaded_snapshots');
      expect(ledger).toHaveLength(2);
      for (const table of DEMO_TABLES) expect(await tableContent(pipeline.targets[env], table)).toEqual(await tableContent(pipeline.source, table));
    }
  });
});

/** SIGTERM while NATS is gone: the app exits instead of waiting for a drain that cannot happen. */
describe('a stop while NATS is down', () => {
  it('exits cleanly within the drain timeout, not after the orchestrator\'s SIGKILL', async () => {
    const nats = await OwnNatsServer.start();
    const namespace = natsNamespace('stopdown', nats.url);
    let scheduler: RunningApp | undefined;
    try {
      scheduler = await RunningApp.start('scheduler', { ...namespace.env, SCHEDULE: '0 0 1 1 *' });
      await until('the scheduler to be healthy', async () => (await scheduler!.health()) === 200, 20_000);
      await nats.stop();
      const started = Date.now();
      const code = await scheduler.stop(40_000);
      // The app's own log says where a stop that hangs waits.
      expect({ code, output: scheduler.output }).toMatchObject({ code: 0, output: expect.stringContaining('drain failed, closing') });
      expect(Date.now() - started).toBeLessThan(25_000);
    } finally {
      await scheduler?.kill();
      await nats.destroy();
    }
  }, 90_000);
});

/**
 * SIGTERM during a load while NATS is down: the load commits, its snapshot.loaded cannot be
 * published, and the stop gives that publish up instead of retrying it through the broker outage
 * (load + about 80 s before). The message is handed back: once NATS and a loader are back, the
 * redelivery announces the load from the ledger, once.
 */
describe('a stop during a load while NATS is down', () => {
  let nats: OwnNatsServer;
  let pipeline: PipelineHarness;

  beforeAll(async () => {
    nats = await OwnNatsServer.start();
    pipeline = await PipelineHarness.create('stopload', {
      environments: ['qa'],
      natsUrl: nats.url,
      targetSql: { qa: slowLoadSql('products', 3) },
      env: { ACK_WAIT: '2s' },
    });
  });
  afterAll(async () => {
    await pipeline?.cleanup();
    await nats?.destroy();
  });
  const stored = () => streamEvents(nats.url, pipeline.namespace.stream, pipeline.namespace.prefix);

  it('exits within the documented bound, and the redelivery announces the load exactly once', async () => {
    await pipeline.startDumper();
    const loader = await pipeline.startLoader('qa');
    await pipeline.trigger('2024-03-01');
    await until('the qa load to be inside its COPY', async () => (await loaderSessions(pipeline.targets.qa)).some((s) => s.wait_event === 'PgSleep'), 60_000);
    const snapshotId = ofSubject(await stored(), 'snapshot.ready')[0]?.snapshotId;
    expect(snapshotId).toEqual(expect.any(String));
    await nats.stop();

    const started = Date.now();
    // Bounded generously past the bound asserted below, so a stop that hangs fails on its time, not a SIGKILL.
    const code = await loader.stop(120_000);
    const took = Date.now() - started;
    // The load commits (about 3 s of it were left), one try of its announcement, the drain: README's "about 10 s".
    expect({ code, output: loader.output }).toMatchObject({ code: 0, output: expect.stringContaining('publishing snapshot.loaded given up: the app is stopping') });
    expect(took).toBeLessThan(20_000);
    expect(await pipeline.targets.qa.query('SELECT snapshot_id, announced_at IS NOT NULL AS announced FROM db_fanout.loaded_snapshots')).toEqual([{ snapshot_id: snapshotId, announced: false }]);

    await nats.restart();
    await pipeline.startLoader('qa', {}, 'loader-qa-restarted');
    let events: StoredEvent[] = [];
    await until('the redelivery to announce the load', async () => loadedFor((events = await stored()), snapshotId).length > 0, 60_000);
    // Past the ack wait: a second announcement (or a redelivery of an unacked message) would show by now.
    await new Promise((resolve) => setTimeout(resolve, 4_000));
    events = await stored();
    expect(loadedFor(events, snapshotId)).toEqual([expect.objectContaining({ snapshotId, environment: 'qa' })]);
    expect(ofSubject(events, 'snapshot.load.failed')).toEqual([]);
    expect(await pipeline.targets.qa.query('SELECT snapshot_id, announced_at IS NOT NULL AS announced FROM db_fanout.loaded_snapshots')).toEqual([{ snapshot_id: snapshotId, announced: true }]);
    for (const table of DEMO_TABLES) expect(await tableContent(pipeline.targets.qa, table)).toEqual(await tableContent(pipeline.source, table));
  }, 300_000);
});

/**
 * A message's last delivery (max_deliver 10) loads and commits, but the stream refuses its
 * snapshot.loaded past the publish's retries (about 45 s; here the stream stops taking the
 * subject, as a broker that is out would). The environment holds the snapshot, so the loader
 * announces it from the ledger; it is never reported failed (an alert and a failed run for an
 * environment that is fine).
 */
describe('snapshot.loaded refused past the publish retries on the last delivery', () => {
  let pipeline: PipelineHarness;

  beforeAll(async () => {
    pipeline = await PipelineHarness.create('lastannounce', { environments: ['qa'], targetSql: { qa: slowLoadSql('products', 2) } });
  });
  afterAll(() => pipeline?.cleanup());
  const stored = () => streamEvents(pipeline.namespace.url, pipeline.namespace.stream, pipeline.namespace.prefix);

  /** Makes the stream take every subject it takes now except `subject`, or all of them again. */
  async function refuse(subject: string | undefined): Promise<void> {
    const nc = await connect({ servers: pipeline.namespace.url });
    try {
      const jsm = await jetstreamManager(nc);
      const { config } = await jsm.streams.info(pipeline.namespace.stream);
      const prefix = pipeline.namespace.prefix;
      const subjects = subject
        ? [`${prefix}${SUBJECTS.trigger}`, ...Object.values(SUBJECTS).filter((s) => s.startsWith('snapshot.') && s !== subject).map((s) => `${prefix}${s}`)]
        : streamSubjects(prefix);
      await jsm.streams.update(pipeline.namespace.stream, { ...config, subjects });
    } finally {
      await nc.close();
    }
  }

  it('announces the committed load from the ledger instead of reporting it failed', async () => {
    // The loader's consumer exists before the snapshot is announced; nothing is loaded yet.
    await (await pipeline.startLoader('qa', {}, 'loader-first')).stop();
    await pipeline.startDumper();
    await pipeline.trigger('2024-03-01');
    await pipeline.events.waitFor('the snapshot', (c) => c.of('snapshot.ready').length === 1);
    const snapshotId = pipeline.events.of('snapshot.ready')[0].snapshotId;
    await useUpDeliveries(pipeline.namespace, 'loader-qa');
    // Nothing else listens on the subject, so a refused publish fails at once (no responders) rather
    // than after its timeout.
    await pipeline.events.stop();
    const loader = await pipeline.startLoader('qa');
    await until('the qa load to be inside its COPY', async () => (await loaderSessions(pipeline.targets.qa)).some((s) => s.wait_event === 'PgSleep'));
    await refuse(SUBJECTS.snapshotLoaded);
    await until('the load to be committed and its announcement given up', () => loader.output.includes('already loaded (ledger), announcing it'), 120_000);
    await refuse(undefined);

    // What the stream stored (a core subscription also sees the publishes it refused).
    let events: StoredEvent[] = [];
    await until('qa loaded', async () => ofSubject((events = await stored()), 'snapshot.loaded').length === 1);
    expect(ofSubject(events, 'snapshot.loaded')[0]).toMatchObject({ environment: 'qa', snapshotId });
    expect(loader.output).toContain('already loaded (ledger), announcing it');
    expect(ofSubject(events, 'snapshot.load.failed')).toEqual([]);
    expect(await pipeline.targets.qa.query('SELECT snapshot_id, announced_at IS NOT NULL AS announced FROM db_fanout.loaded_snapshots')).toEqual([{ snapshot_id: snapshotId, announced: true }]);
    for (const table of DEMO_TABLES) expect(await tableContent(pipeline.targets.qa, table)).toEqual(await tableContent(pipeline.source, table));
    await until('the message to be settled', async () => (await consumerBacklog(pipeline.namespace.stream, 'loader-qa')).unacked === 0);
  }, 180_000);
});
