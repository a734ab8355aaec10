import { Logger } from '@nestjs/common';
import { AckPolicy, type ConsumerConfig, DeliverPolicy, jetstream, jetstreamManager, type JsMsg } from '@nats-io/jetstream';
import { connect, nanos, type NatsConnection } from '@nats-io/transport-node';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { OwnNatsServer } from '../../../../test/support/nats-server';
import { NATS_URL, specNatsConfig } from '../../../../test/support/nats';
import { announcedSnapshots } from './announced-snapshots';
import { ACK, confirmAck, type Disposition, isLastDeliveryOf, nak, PullConsumer, TERM } from './pull-consumer';
import { ensureStream } from './stream-setup';

async function until(what: string, condition: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

describe('PullConsumer (real NATS)', () => {
  const id = randomBytes(4).toString('hex');
  const stream = `SPEC_PULL_${id}`;
  const subject = `spec_pull_${id}.work`;
  const logger = new Logger('spec');
  let nc: NatsConnection;
  let durable: string;
  let stop: AbortController;
  let running: Promise<void> | undefined;
  let deliveries: { body: string; delivery: number; last: boolean }[];

  const jsm = () => jetstreamManager(nc);
  const publish = async (body: string) => jetstream(nc).publish(subject, body);
  const addConsumer = async (overrides: { ack_wait?: number; max_deliver?: number; max_ack_pending?: number } = {}) => {
    await (await jsm()).consumers.add(stream, {
      durable_name: durable,
      filter_subject: subject,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.New,
      ack_wait: nanos(overrides.ack_wait ?? 1_000),
      max_deliver: overrides.max_deliver ?? 5,
      max_ack_pending: overrides.max_ack_pending ?? 100,
    });
  };
  const state = async () => {
    const info = await (await jsm()).consumers.info(stream, durable);
    return { unacked: info.num_ack_pending, pending: info.num_pending };
  };
  /** Starts the loop; `handle` decides per body. The consumer is recreated (as created here) when it is gone. */
  const start = (handle: (message: JsMsg, last: boolean) => Promise<Disposition>, expiresMs = 1_000) => {
    stop = new AbortController();
    const consumer = new PullConsumer({
      connection: nc,
      stream,
      name: durable,
      ensure: async () => {
        if (!(await (await jsm()).consumers.info(stream, durable).catch(() => undefined))) await addConsumer();
      },
      logger,
      expiresMs,
      retryDelayMs: 200,
    });
    running = consumer.run(async (message, settings) => {
      const last = isLastDeliveryOf(message, settings);
      deliveries.push({ body: message.string(), delivery: message.info.deliveryCount, last });
      return handle(message, last);
    }, stop.signal);
  };
  const of = (body: string) => deliveries.filter((d) => d.body === body);

  beforeAll(async () => {
    nc = await connect({ servers: NATS_URL });
    await (await jsm()).streams.add({ name: stream, subjects: [`spec_pull_${id}.>`] });
  });
  beforeEach(async () => {
    deliveries = [];
    durable = `c${randomBytes(3).toString('hex')}`;
    await addConsumer();
  });
  afterEach(async () => {
    stop?.abort();
    await running;
    running = undefined;
  });
  afterAll(async () => {
    await (await jsm()).streams.delete(stream).catch(() => undefined);
    await nc.close();
  });

  it('acks, naks (redelivered) and terms (never again) as the handler says', async () => {
    start(async (message) => {
      const body = message.string();
      if (body === 'nak-once' && message.info.deliveryCount === 1) return nak(100);
      if (body === 'term') return TERM;
      return Promise.resolve(ACK);
    });
    for (const body of ['ok', 'nak-once', 'term']) await publish(body);
    await until('the redelivery', () => of('nak-once').length === 2);
    await sleep(1_500); // past the ack wait: anything left unacked would come again now
    expect(of('ok').map((d) => d.delivery)).toEqual([1]);
    expect(of('nak-once').map((d) => d.delivery)).toEqual([1, 2]);
    expect(of('term').map((d) => d.delivery)).toEqual([1]);
    expect(await state()).toEqual({ unacked: 0, pending: 0 });
  });

  it('redelivers a message whose handler threw', async () => {
    // A 1 s ack wait would let a busy machine's stalls cause redeliveries of their own.
    await (await jsm()).consumers.update(stream, durable, { ack_wait: nanos(5_000) });
    start(async (message) => {
      if (message.info.deliveryCount === 1) throw new Error('transient');
      return Promise.resolve(ACK);
    });
    await publish('throws-once');
    await until('the redelivery', () => of('throws-once').length === 2);
    await until('the ack', async () => (await state()).unacked === 0);
    expect(of('throws-once').map((d) => d.delivery)).toEqual([1, 2]);
  });

  it('keeps a handler that outlasts the broker\'s ack wait with heartbeats: no redelivery', async () => {
    // The ack wait is the consumer's (1 s on the broker); the loop is told nothing about it.
    start(async () => {
      await sleep(3_500);
      return ACK;
    });
    await publish('slow');
    await until('the slow handler', async () => (await state()).unacked === 0 && of('slow').length === 1, 15_000);
    await sleep(1_500);
    expect(of('slow').map((d) => d.delivery)).toEqual([1]);
  });

  it('follows the max_deliver the broker holds, also when it is changed while running', async () => {
    start(() => Promise.resolve(nak(50)), 1_000);
    await until('a first idle pull', () => sleep(1_200).then(() => true));
    await (await jsm()).consumers.update(stream, durable, { max_deliver: 2 });
    await sleep(1_500); // an idle pull reads the settings again
    await publish('poison');
    await until('two deliveries', () => of('poison').length === 2);
    await sleep(500);
    expect(of('poison')).toEqual([
      { body: 'poison', delivery: 1, last: false },
      { body: 'poison', delivery: 2, last: true },
    ]);
  });

  it('sets the consumer up again when it is deleted under it', async () => {
    start(() => Promise.resolve(ACK), 1_000);
    await publish('before');
    await until('the first message', () => of('before').length === 1);
    await (await jsm()).consumers.delete(stream, durable);
    await until('the consumer to be back', async () => Boolean(await (await jsm()).consumers.info(stream, durable).catch(() => undefined)), 15_000);
    await publish('after');
    await until('a message after the re-creation', () => of('after').length === 1, 15_000);
  });

  it('on stop returns at once while a pull waits, without waiting for the pull to expire (or a broker that is gone)', async () => {
    start(() => Promise.resolve(ACK), 20_000);
    await publish('first');
    await until('the first message', () => of('first').length === 1);
    await sleep(500); // the next pull is out, waiting up to 20 s for a message
    const stopped = Date.now();
    stop.abort();
    await running;
    expect(Date.now() - stopped).toBeLessThan(2_000);
    // A message the abandoned pull still receives is handed back, not lost: the next reader gets it.
    await publish('after-stop');
    await sleep(300);
    expect(of('after-stop')).toEqual([]);
    start(() => Promise.resolve(ACK), 1_000);
    await until('the next reader to get it', () => of('after-stop').length === 1);
  });

  it('on stop lets the in-flight handler finish, settles its message, then returns', async () => {
    let finished = false;
    start(async () => {
      await sleep(1_500);
      finished = true;
      return ACK;
    });
    await publish('in-flight');
    await until('the handler to start', () => of('in-flight').length === 1);
    stop.abort();
    await running;
    expect(finished).toBe(true);
    expect(await state()).toEqual({ unacked: 0, pending: 0 });
  });
});

describe('PullConsumer.readToEnd and announcedSnapshots (real NATS)', () => {
  const nats = specNatsConfig('read');
  let nc: NatsConnection;
  const ready = (snapshotId: string) => jetstream(nc).publish(`${nats.subjectPrefix}snapshot.ready`, JSON.stringify({ snapshotId }));

  beforeAll(async () => {
    nc = await connect({ servers: NATS_URL });
    await ensureStream(await jetstreamManager(nc), nats);
  });
  afterAll(async () => {
    await (await jetstreamManager(nc)).streams.delete(nats.stream).catch(() => undefined);
    await nc.close();
  });

  it('lists nothing at once when nothing was announced', async () => {
    const started = Date.now();
    expect(await announcedSnapshots(nc, nats)).toEqual([]);
    expect(Date.now() - started).toBeLessThan(1_000);
  });

  it('lists every announcement in order with its stream sequence, skipping the other subjects', async () => {
    await ready('20240101-aaaaaaaa');
    await jetstream(nc).publish(`${nats.subjectPrefix}snapshot.loaded`, '{}');
    await ready('20240102-bbbbbbbb');
    await jetstream(nc).publish(`${nats.subjectPrefix}snapshot.ready`, '{not json');
    await ready('20240103-cccccccc');
    const listed = await announcedSnapshots(nc, nats);
    expect(listed.map((a) => a.body.snapshotId)).toEqual(['20240101-aaaaaaaa', '20240102-bbbbbbbb', '20240103-cccccccc']);
    expect(listed.map((a) => a.seq)).toEqual([1, 3, 5]);
  });

  it('does not take an empty pull for the end: reads on while the consumer still has messages pending', async () => {
    // max_ack_pending 1 and a message held by someone else: pulls come back empty for a while,
    // as from a slow broker, although three messages are still to come.
    const jsm = await jetstreamManager(nc);
    const name = 'held';
    await jsm.consumers.add(nats.stream, { durable_name: name, filter_subject: `${nats.subjectPrefix}snapshot.ready`, ack_policy: AckPolicy.Explicit, ack_wait: nanos(30_000), max_ack_pending: 1 });
    const holder = await jetstream(nc).consumers.get(nats.stream, name);
    const held = (await holder.next({ expires: 2_000 }))!;
    setTimeout(() => held.ack(), 2_500); // longer than one pull of the reader
    const seen: number[] = [];
    await new PullConsumer({ connection: nc, stream: nats.stream, name, logger: new Logger('spec'), expiresMs: 1_000 }).readToEnd((message) => {
      seen.push(message.seq);
      return Promise.resolve(ACK);
    }, 15_000);
    expect(seen).toEqual([3, 4, 5]);
  });

  it('throws instead of returning part of the list when the pending messages do not come in time', async () => {
    const jsm = await jetstreamManager(nc);
    const name = 'stuck';
    await jsm.consumers.add(nats.stream, { durable_name: name, filter_subject: `${nats.subjectPrefix}snapshot.ready`, ack_policy: AckPolicy.Explicit, ack_wait: nanos(30_000), max_ack_pending: 1 });
    await (await jetstream(nc).consumers.get(nats.stream, name)).next({ expires: 2_000 }); // held, never acked
    const reader = new PullConsumer({ connection: nc, stream: nats.stream, name, logger: new Logger('spec'), expiresMs: 1_000 });
    await expect(reader.readToEnd(() => Promise.resolve(ACK), 2_500)).rejects.toThrow(/still had 3 messages pending after 2500ms: the list is incomplete/);
  });

  /**
   * A message of an AckPolicy.None consumer lost on its way is never sent again. Here another reader
   * of the same consumer takes the message after the reader's first, which looks the same to it.
   */
  const readWithSecondTaken = async (name: string, from: Partial<ConsumerConfig> = {}) => {
    await (await jetstreamManager(nc)).consumers.add(nats.stream, { durable_name: name, filter_subject: `${nats.subjectPrefix}snapshot.ready`, ack_policy: AckPolicy.None, ...from });
    const other = await jetstream(nc).consumers.get(nats.stream, name);
    const seen: number[] = [];
    const reader = new PullConsumer({ connection: nc, stream: nats.stream, name, logger: new Logger('spec'), expiresMs: 1_000 });
    const read = reader.readToEnd(async (message) => {
      seen.push(message.seq);
      if (seen.length === 1) await other.next({ expires: 2_000 });
      return ACK;
    }, 10_000);
    return { read, seen };
  };

  it('throws instead of returning part of the list when a delivery never reaches the reader', async () => {
    const { read, seen } = await readWithSecondTaken('gap');
    await expect(read).rejects.toThrow(/delivery 2 never reached this reader \(delivery 3 came next; lost on its way, or taken by another reader\): the list is incomplete/);
    expect(seen).toEqual([1]);
  });

  it('throws also when the delivery that never reaches the reader is the last one', async () => {
    // No later delivery shows the gap; the reader's next pull comes back empty with nothing pending.
    const [last] = (await announcedSnapshots(nc, nats)).slice(-1);
    const { read, seen } = await readWithSecondTaken('lastgap', { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: last.seq - 1 });
    await expect(read).rejects.toThrow(/delivery 2 never reached this reader \(the consumer counts 2 deliveries, 1 arrived; lost on its way, or taken by another reader\): the list is incomplete/);
    expect(seen).toEqual([last.seq - 1]);
  });

  it('read again by the same reader, lists what was announced since its last read', async () => {
    await (await jetstreamManager(nc)).consumers.add(nats.stream, { durable_name: 'again', filter_subject: `${nats.subjectPrefix}snapshot.ready`, ack_policy: AckPolicy.None });
    const reader = new PullConsumer({ connection: nc, stream: nats.stream, name: 'again', logger: new Logger('spec'), expiresMs: 1_000 });
    const read = async () => {
      const seen: number[] = [];
      await reader.readToEnd((message) => {
        seen.push(message.seq);
        return Promise.resolve(ACK);
      }, 10_000);
      return seen;
    };
    await read();
    const { seq } = await ready('20240104-dddddddd');
    expect(await read()).toEqual([seq]);
  });

  it('throws when the broker does not answer', async () => {
    const server = await OwnNatsServer.start();
    const own = await connect({ servers: server.url, maxReconnectAttempts: -1, reconnectTimeWait: 200 });
    try {
      const ownNats = { ...nats, servers: [server.url] };
      await ensureStream(await jetstreamManager(own), ownNats);
      await jetstream(own).publish(`${ownNats.subjectPrefix}snapshot.ready`, JSON.stringify({ snapshotId: '20240101-aaaaaaaa' }));
      await server.stop();
      await expect(announcedSnapshots(own, ownNats)).rejects.toThrow();
    } finally {
      await own.close().catch(() => undefined);
      await server.destroy();
    }
  }, 30_000);
});

/**
 * The broker's side of an ack is played by a subscriber on the ack subject that stays silent for the
 * first requests, as a consumer does while its cluster elects a new leader (the 3-node cluster e2e
 * lost a dumper's trigger ack that way and dumped the trigger twice). The message stands in for
 * nats.js's JsMsg: its ackAck() is what the client's does, one request on the reply subject.
 */
describe('confirmAck (real NATS)', () => {
  const id = randomBytes(4).toString('hex');
  let nc: NatsConnection;
  let lines: string[];
  const logger = { log: (line: string) => lines.push(line), warn: (line: string) => lines.push(line) } as unknown as Logger;
  const messageAckedOn = (ackSubject: string) =>
    ({
      subject: 'spec.work',
      seq: 7,
      reply: ackSubject,
      ackAck: (opts?: { timeout?: number }) => nc.request(ackSubject, '+ACK', { timeout: opts?.timeout ?? 5_000 }).then(() => true),
    }) as unknown as JsMsg;
  /** Answers the acks on `subject` from request number `silentFor + 1` on. */
  const broker = async (subject: string, silentFor: number) => {
    let seen = 0;
    nc.subscribe(subject, {
      callback: (_error, msg) => {
        if (++seen > silentFor) msg.respond();
      },
    });
    await nc.flush();
    return { seen: () => seen };
  };

  beforeAll(async () => {
    nc = await connect({ servers: NATS_URL });
  });
  beforeEach(() => {
    lines = [];
  });
  afterAll(async () => {
    await nc.close();
  });

  it('asks again until the broker confirms the ack, within the ack wait', async () => {
    const subject = `spec_ack_${id}.late`;
    const acks = await broker(subject, 2);
    await expect(confirmAck(nc, messageAckedOn(subject), 20_000, logger)).resolves.toBe(true);
    expect(acks.seen()).toBe(3);
    expect(lines).toEqual(['ack of spec.work #7 confirmed on attempt 3']);
  }, 30_000);

  it('gives up when the ack wait is over (the broker redelivers then anyway)', async () => {
    const subject = `spec_ack_${id}.never`;
    const acks = await broker(subject, Number.POSITIVE_INFINITY);
    const started = Date.now();
    await expect(confirmAck(nc, messageAckedOn(subject), 4_000, logger)).resolves.toBe(false);
    expect(Date.now() - started).toBeGreaterThanOrEqual(4_000);
    expect(Date.now() - started).toBeLessThan(7_000);
    expect(acks.seen()).toBeGreaterThanOrEqual(2);
  }, 20_000);

  it('stops asking once the app is stopping', async () => {
    const subject = `spec_ack_${id}.stopping`;
    const acks = await broker(subject, Number.POSITIVE_INFINITY);
    const stopping = new AbortController();
    setTimeout(() => stopping.abort(), 300);
    const started = Date.now();
    await expect(confirmAck(nc, messageAckedOn(subject), 30_000, logger, stopping.signal)).resolves.toBe(false);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(acks.seen()).toBe(1);
  }, 20_000);
});

