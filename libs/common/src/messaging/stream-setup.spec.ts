import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, millis, nanos, type NatsConnection } from '@nats-io/transport-node';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NATS_URL, specNatsConfig } from '../../../../test/support/nats';
import { OwnNatsServer } from '../../../../test/support/nats-server';
import { streamSubjects } from '../contract/subjects';
import { type ConsumerBinding, ensureConsumer, ensureStream } from './stream-setup';

describe('ensureConsumer (real NATS)', () => {
  const config = specNatsConfig('setup', 30_000);
  const binding: ConsumerBinding = { pattern: 'snapshot.ready', durable: 'loader-dev', startAt: 'last', maxDeliver: 10, maxAckPending: 1 };
  let nc: NatsConnection;
  let jsm: JetStreamManager;

  beforeAll(async () => {
    nc = await connect({ servers: NATS_URL });
    jsm = await jetstreamManager(nc);
    await ensureStream(jsm, config);
  });
  afterEach(async () => {
    await jsm.consumers.delete(config.stream, binding.durable).catch(() => undefined);
  });
  afterAll(async () => {
    await jsm.streams.delete(config.stream).catch(() => undefined);
    await nc.close();
  });

  it('creates a missing consumer as the binding and ACK_WAIT say, and returns the broker\'s settings', async () => {
    const settings = await ensureConsumer(jsm, config, binding);
    const held = (await jsm.consumers.info(config.stream, binding.durable)).config;
    expect(held).toMatchObject({ filter_subject: `${config.subjectPrefix}snapshot.ready`, ack_policy: 'explicit', deliver_policy: 'last', max_deliver: 10, max_ack_pending: 1 });
    expect(millis(held.ack_wait!)).toBe(30_000);
    expect(settings).toEqual({ ackWaitMs: 30_000, maxDeliver: 10, maxAckPending: 1, explicitAck: true });
  });

  it('brings every setting the broker can change in line on start, keeping the consumer\'s position', async () => {
    await jsm.consumers.add(config.stream, {
      durable_name: binding.durable,
      filter_subject: `${config.subjectPrefix}snapshot.>`,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: nanos(5_000),
      max_deliver: 3,
      max_ack_pending: 1000,
      headers_only: true,
    });
    const js = jetstream(nc);
    for (const n of [1, 2]) await js.publish(`${config.subjectPrefix}snapshot.ready`, JSON.stringify({ n }));
    const first = (await (await js.consumers.get(config.stream, binding.durable)).next({ expires: 2_000 }))!;
    await first.ackAck();
    const settings = await ensureConsumer(jsm, config, binding);
    const info = await jsm.consumers.info(config.stream, binding.durable);
    expect(info.config).toMatchObject({ filter_subject: `${config.subjectPrefix}snapshot.ready`, max_deliver: 10, max_ack_pending: 1, deliver_policy: 'all' });
    expect(info.config.headers_only ?? false).toBe(false);
    expect(millis(info.config.ack_wait!)).toBe(30_000);
    expect(settings).toEqual({ ackWaitMs: 30_000, maxDeliver: 10, maxAckPending: 1, explicitAck: true });
    expect(info.ack_floor.stream_seq).toBe(first.seq);
    expect(info.num_pending).toBe(1);
    // Nothing left to change: a second start leaves it alone.
    const before = info.created;
    await ensureConsumer(jsm, config, binding);
    expect((await jsm.consumers.info(config.stream, binding.durable)).created).toBe(before);
  });

  it('stops naming each difference the broker cannot change, and leaves the consumer as it was', async () => {
    await jsm.consumers.add(config.stream, {
      durable_name: binding.durable,
      filter_subject: `${config.subjectPrefix}snapshot.ready`,
      ack_policy: AckPolicy.All,
      deliver_policy: DeliverPolicy.All,
      ack_wait: nanos(5_000),
      max_deliver: 10,
      max_ack_pending: 1,
    });
    const failure = ensureConsumer(jsm, config, binding);
    await expect(failure).rejects.toThrow(
      `consumer loader-dev of stream ${config.stream} differs from what this app needs in what the broker cannot change: ack_policy "all" (wanted "explicit"); ` +
        `remove it (nats consumer rm ${config.stream} loader-dev) to have it created again`,
    );
    expect(millis((await jsm.consumers.info(config.stream, binding.durable)).config.ack_wait!)).toBe(5_000);
  });
});

describe('ensureStream (real NATS)', () => {
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  const made: string[] = [];

  beforeAll(async () => {
    nc = await connect({ servers: NATS_URL });
    jsm = await jetstreamManager(nc);
  });
  afterAll(async () => {
    for (const stream of made) await jsm.streams.delete(stream).catch(() => undefined);
    await nc.close();
  });

  /** A stream made beforehand (as an operator or another pipeline may have) for the subjects of `prefix`. */
  async function existing(config: { stream: string; subjectPrefix: string }): Promise<void> {
    made.push(config.stream);
    await jsm.streams.add({ name: config.stream, subjects: streamSubjects(config.subjectPrefix) });
  }

  it('creates the stream for the prefix\'s subjects, and accepts it as it is on the next start', async () => {
    const config = specNatsConfig('ensure');
    made.push(config.stream);
    await ensureStream(jsm, config);
    expect((await jsm.streams.info(config.stream)).config.subjects).toEqual(streamSubjects(config.subjectPrefix));
    await expect(ensureStream(jsm, config)).resolves.toBeUndefined();
  });

  it('stops naming NATS_STREAM and NATS_SUBJECT_PREFIX when the existing stream does not store the prefix\'s subjects', async () => {
    const config = specNatsConfig('otherprefix');
    const stored = { stream: config.stream, subjectPrefix: `${config.subjectPrefix}a.` };
    await existing(stored);
    await expect(ensureStream(jsm, config)).rejects.toThrow(
      `NATS_STREAM ${config.stream} does not store the subjects of NATS_SUBJECT_PREFIX "${config.subjectPrefix}" ` +
        `(no stream stores ${config.subjectPrefix}replication.trigger, ${config.subjectPrefix}snapshot.ready, and 9 more); ` +
        `the stream captures ${streamSubjects(stored.subjectPrefix).join(', ')}: check NATS_SUBJECT_PREFIX and NATS_STREAM, which every app of the pipeline must share`,
    );
  });

  it('names NATS_STREAM_REPLICAS and its value when the broker will not create the stream with them (a single server)', async () => {
    const config = { ...specNatsConfig('replicas'), streamReplicas: 3 };
    made.push(config.stream);
    await expect(ensureStream(jsm, config)).rejects.toThrow(`the broker refused to create stream ${config.stream} with NATS_STREAM_REPLICAS=3: replicas > 1 not supported in non-clustered mode`);
  });

  it('stops naming the stream that stores the prefix\'s subjects when it is not NATS_STREAM, and creates nothing', async () => {
    const config = specNatsConfig('otherstream');
    const other = { stream: `${config.stream}_OTHER`, subjectPrefix: config.subjectPrefix };
    await existing(other);
    await expect(ensureStream(jsm, config)).rejects.toThrow(
      `the subjects of NATS_SUBJECT_PREFIX "${config.subjectPrefix}" are stored in stream ${other.stream}, not in NATS_STREAM ${config.stream} ` +
        `(${config.subjectPrefix}replication.trigger, ${config.subjectPrefix}snapshot.ready, and 9 more): set NATS_STREAM as the other apps of the pipeline have it`,
    );
    await expect(jsm.streams.info(config.stream)).rejects.toThrow('stream not found');
  });

  it('stops when NATS_STREAM is a stream that captures no subjects (a mirror), which stores none of the pipeline\'s', async () => {
    const config = specNatsConfig('mirror');
    const source = { stream: `${config.stream}_SRC`, subjectPrefix: `${config.subjectPrefix}src.` };
    await existing(source);
    made.push(config.stream);
    await jsm.streams.add({ name: config.stream, mirror: { name: source.stream } });
    await expect(ensureStream(jsm, config)).rejects.toThrow(`NATS_STREAM ${config.stream} does not store the subjects of NATS_SUBJECT_PREFIX "${config.subjectPrefix}"`);
    await expect(ensureStream(jsm, config)).rejects.toThrow('the stream captures no subjects');
  });

  it('boots unchecked, with a warning, when the NATS user may not list streams ($JS.API.STREAM.NAMES)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'db-fanout-nats-perms-'));
    const file = join(dir, 'server.conf');
    writeFileSync(file, 'authorization { users = [ { user: app, password: app, permissions: { publish: { deny: ["$JS.API.STREAM.NAMES"] } } } ] }\n');
    const server = await OwnNatsServer.start(['-c', file]);
    const app = await connect({ servers: server.url, user: 'app', pass: 'app' });
    try {
      const config = specNatsConfig('perms');
      const appJsm = await jetstreamManager(app);
      const warnings: string[] = [];
      await ensureStream(appJsm, config, (message) => warnings.push(message));
      expect((await appJsm.streams.info(config.stream)).config.subjects).toEqual(streamSubjects(config.subjectPrefix));
      await ensureStream(appJsm, config, (message) => warnings.push(message));
      // Created on the first start, accepted as it is on the second: each start says what it could not check.
      const warning = `could not check that NATS_STREAM ${config.stream} stores the subjects of NATS_SUBJECT_PREFIX "${config.subjectPrefix}": this NATS user may not list streams ($JS.API.STREAM.NAMES)`;
      expect(warnings).toEqual([warning, warning]);
    } finally {
      await app.close();
      await server.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
