import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, millis, nanos, type NatsConnection } from '@nats-io/transport-node';
import { NATS_URL, specNatsConfig } from '../../../../test/support/nats';
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
