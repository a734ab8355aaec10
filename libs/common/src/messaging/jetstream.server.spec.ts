import { Controller, type INestApplication } from '@nestjs/common';
import { Ctx, EventPattern, Payload } from '@nestjs/microservices';
import { Test } from '@nestjs/testing';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { setTimeout as sleep } from 'node:timers/promises';
import { attachJetStream } from '../bootstrap/run-app';
import { NATS_URL, specNatsConfig } from '../../../../test/support/nats';
import { InvalidMessageError } from '../contract/invalid-message.error';
import { RetriesExhaustedError } from '../resilience/retry';
import { SUBJECTS } from '../contract/subjects';
import { ObservabilityModule } from '../observability/observability.module';
import { ReadinessService } from '../observability/readiness.service';
import { JetStreamContext } from './jetstream.context';
import { JetStreamModule } from './jetstream.module';

type Body = { id: string; mode: 'ok' | 'invalid' | 'fail-once' | 'slow' | 'quote-value' };

/** Records what the transport hands to an ordinary @EventPattern handler. */
@Controller()
class ProbeController {
  static calls: { id: string; delivery: number }[] = [];
  static finished: string[] = [];

  @EventPattern<string>(SUBJECTS.snapshotReady)
  async handle(@Payload() body: Body, @Ctx() context: JetStreamContext): Promise<void> {
    ProbeController.calls.push({ id: body.id, delivery: context.getDeliveryCount() });
    if (body.mode === 'invalid') throw new InvalidMessageError(`probe ${body.id} is invalid`);
    if (body.mode === 'fail-once' && context.getDeliveryCount() === 1) throw new Error('transient probe failure');
    // What a load stopped mid-COPY rethrows for redelivery: PostgreSQL's error quotes the row value.
    if (body.mode === 'quote-value' && context.getDeliveryCount() === 1) {
      throw new RetriesExhaustedError(1, Object.assign(new Error('invalid input syntax for type integer: "4111 1111 1111 1111"'), { code: '22P02', where: 'COPY t, line 2, column v: "4111 1111 1111 1111"' }));
    }
    if (body.mode === 'slow') await sleep(3_500); // 3.5x the ack wait
    ProbeController.finished.push(body.id);
  }
}

type NatsSpecConfig = ReturnType<typeof specNatsConfig>;
type LoggerMethod = (...parts: unknown[]) => void;

/** A Nest app whose JetStream transport binds `controller` to snapshot.ready under `durable`, every log line handed to `log`. */
async function startProbeApp(config: NatsSpecConfig, durable: string, maxDeliver: number, controller: new (...args: never[]) => unknown, log: LoggerMethod) {
  const nc = await connect({ servers: NATS_URL });
  const moduleRef = await Test.createTestingModule({
    imports: [ObservabilityModule.forRoot(), JetStreamModule.forRoot({ config, clientName: 'spec', bindings: [{ pattern: SUBJECTS.snapshotReady, durable, startAt: 'all', maxDeliver }] })],
    controllers: [controller],
  }).compile();
  const app = moduleRef.createNestApplication({ logger: { log, error: log, warn: log, debug: log, verbose: log, fatal: log } });
  attachJetStream(app);
  await app.startAllMicroservices();
  await app.init();
  return { app, nc };
}

async function stopProbeApp(app: INestApplication | undefined, nc: NatsConnection | undefined, config: NatsSpecConfig): Promise<void> {
  await app?.close();
  if (!nc) return;
  await (await jetstreamManager(nc)).streams.delete(config.stream).catch(() => undefined);
  await nc.close();
}

/** The durable's messages delivered but not settled, and those not yet delivered. */
async function consumerStateOf(nc: NatsConnection, config: NatsSpecConfig, durable: string) {
  const info = await (await jetstreamManager(nc)).consumers.info(config.stream, durable);
  return { unacked: info.num_ack_pending, pending: info.num_pending };
}

describe('JetStreamServer (real NATS)', () => {
  const config = specNatsConfig('js');
  /** Every line the app logs, Nest's own exception handler's included. */
  const logged: string[] = [];
  const keep = (...parts: unknown[]) => void logged.push(parts.map((part) => (part instanceof Error ? `${part.message}\n${part.stack}` : typeof part === 'string' ? part : JSON.stringify(part))).join(' '));
  const durable = 'probe';
  let app: INestApplication;
  let nc: NatsConnection;

  const publish = async (body: Body | string) => {
    await jetstream(nc).publish(`${config.subjectPrefix}${SUBJECTS.snapshotReady}`, typeof body === 'string' ? body : JSON.stringify(body));
  };
  const consumerState = () => consumerStateOf(nc, config, durable);
  const callsFor = (probe: string) => ProbeController.calls.filter((c) => c.id === probe);
  const until = async (what: string, condition: () => boolean, timeoutMs = 10_000) => {
    const deadline = Date.now() + timeoutMs;
    while (!condition()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(ProbeController.calls)}`);
      await sleep(50);
    }
  };

  beforeAll(async () => {
    ({ app, nc } = await startProbeApp(config, durable, 5, ProbeController, keep));
  });

  afterAll(() => stopProbeApp(app, nc, config));

  it('creates the stream and the durable consumer, and reports ready', async () => {
    const info = await (await jetstreamManager(nc)).consumers.info(config.stream, durable);
    expect(info.config.filter_subject).toBe(`${config.subjectPrefix}snapshot.ready`);
    expect(app.get(ReadinessService).isReady()).toBe(true);
  });

  it('hands the parsed body to the handler and acks after it returns', async () => {
    await publish({ id: 'ok-1', mode: 'ok' });
    await until('ok-1', () => ProbeController.finished.includes('ok-1'));
    await sleep(1_500); // past the ack wait: an unacked message would be redelivered now
    expect(callsFor('ok-1')).toEqual([{ id: 'ok-1', delivery: 1 }]);
    expect(await consumerState()).toEqual({ unacked: 0, pending: 0 });
  });

  it('terminates a message the handler proves invalid: never redelivered', async () => {
    await publish({ id: 'invalid-1', mode: 'invalid' });
    await until('invalid-1', () => callsFor('invalid-1').length === 1);
    await sleep(2_500);
    expect(callsFor('invalid-1')).toHaveLength(1);
    expect(await consumerState()).toEqual({ unacked: 0, pending: 0 });
  });

  it('terminates a body that is not JSON without calling the handler', async () => {
    const before = ProbeController.calls.length;
    await publish('{not json');
    await sleep(2_500);
    expect(ProbeController.calls.length).toBe(before);
    expect(await consumerState()).toEqual({ unacked: 0, pending: 0 });
  });

  it('redelivers after an unexpected handler error, then acks the success', async () => {
    await publish({ id: 'retry-1', mode: 'fail-once' });
    await until('the redelivery', () => ProbeController.finished.includes('retry-1'));
    expect(callsFor('retry-1')).toEqual([
      { id: 'retry-1', delivery: 1 },
      { id: 'retry-1', delivery: 2 },
    ]);
    await sleep(1_500);
    expect(await consumerState()).toEqual({ unacked: 0, pending: 0 });
  });

  it('hands an unexpected error back for redelivery without logging the row value it quotes', async () => {
    await publish({ id: 'quote-1', mode: 'quote-value' });
    await until('the redelivery', () => ProbeController.finished.includes('quote-1'));
    expect(logged.some((line) => line.includes('will be redelivered: invalid input syntax for type integer'))).toBe(true);
    expect(logged.filter((line) => line.includes('4111'))).toEqual([]);
  });

  it('keeps a message that outlasts the ack wait: working() heartbeats prevent a redelivery', async () => {
    await publish({ id: 'slow-1', mode: 'slow' });
    await until('slow-1', () => ProbeController.finished.includes('slow-1'), 15_000);
    await sleep(1_500);
    expect(callsFor('slow-1')).toEqual([{ id: 'slow-1', delivery: 1 }]);
    expect(await consumerState()).toEqual({ unacked: 0, pending: 0 });
  });

  it('on shutdown lets the in-flight handler finish and acks it before closing', async () => {
    await publish({ id: 'drain-1', mode: 'slow' });
    await until('drain-1 to start', () => callsFor('drain-1').length === 1);
    await app.close();
    expect(ProbeController.finished).toContain('drain-1');
    expect(app.get(ReadinessService).isReady()).toBe(false);
    expect(await consumerState()).toEqual({ unacked: 0, pending: 0 });
  });
});

/** A handler that fails every delivery, its failure report too (the broker out), as the loader's could on a last delivery. */
@Controller()
class FailingReportController {
  static deliveries: { id: string; delivery: number; last: boolean }[] = [];

  @EventPattern<string>(SUBJECTS.snapshotReady)
  handle(@Payload() body: { id: string }, @Ctx() context: JetStreamContext): Promise<void> {
    FailingReportController.deliveries.push({ id: body.id, delivery: context.getDeliveryCount(), last: context.isLastDelivery() });
    if (!context.isLastDelivery()) return Promise.reject(new Error('target database unreachable'));
    return Promise.reject(new Error('publishing snapshot.load.failed failed: timeout'));
  }
}

/**
 * The last delivery (max_deliver 2 here) whose handler fails, its failure report included: the
 * broker will not deliver it again, so it must not be logged as "will be redelivered" and naked
 * (the broker then dropped it silently after the nak's delay); it is terminated, the log saying so.
 */
describe('JetStreamServer, a handler failing on the last delivery (real NATS)', () => {
  // An ack wait longer than the nak's delay (5 s at most): a nak would keep the message pending that long.
  const config = specNatsConfig('js_last', 20_000);
  const logged: string[] = [];
  // The message only (Nest adds the context after it).
  const keep = (message: unknown) => void logged.push(String(message));
  const durable = 'last';
  let app: INestApplication;
  let nc: NatsConnection;

  beforeAll(async () => {
    ({ app, nc } = await startProbeApp(config, durable, 2, FailingReportController, keep));
  });

  afterAll(() => stopProbeApp(app, nc, config));

  it('logs that the message is dropped with no outcome published, and terminates it at once', async () => {
    const { seq } = await jetstream(nc).publish(`${config.subjectPrefix}${SUBJECTS.snapshotReady}`, JSON.stringify({ id: 'last-1' }));
    const deadline = Date.now() + 20_000;
    const lastLine = () => logged.find((line) => line.includes(`#${seq} `) && line.includes('delivery 2'));
    while (!lastLine() && Date.now() < deadline) await sleep(50);
    const handled = Date.now();
    expect(FailingReportController.deliveries).toEqual([
      { id: 'last-1', delivery: 1, last: false },
      { id: 'last-1', delivery: 2, last: true },
    ]);
    expect(lastLine()).toBe(
      `dropped snapshot.ready #${seq} (consumer ${durable}) after its last delivery 2/2 with no outcome published: the handler failed: publishing snapshot.load.failed failed: timeout`,
    );
    // The first delivery's failure is redelivered, and said so.
    expect(logged).toContainEqual(`handler failed for snapshot.ready #${seq} (delivery 1, consumer ${durable}), will be redelivered: target database unreachable`);
    // Terminated: settled right away, not after the nak's delay (a message past max_deliver is then dropped).
    const state = () => consumerStateOf(nc, config, durable);
    while (JSON.stringify(await state()) !== JSON.stringify({ unacked: 0, pending: 0 }) && Date.now() - handled < 1_500) await sleep(50);
    expect(await state()).toEqual({ unacked: 0, pending: 0 });
    expect(Date.now() - handled).toBeLessThan(1_500);
  });
});

describe('JetStreamServer with no consumer bindings (a publisher, as the scheduler)', () => {
  it('reports on /health that it is connected and consumes nothing, not an empty "consuming "', async () => {
    const config = specNatsConfig('js_none');
    const moduleRef = await Test.createTestingModule({ imports: [ObservabilityModule.forRoot(), JetStreamModule.forRoot({ config, clientName: 'spec', bindings: [] })] }).compile();
    const app = moduleRef.createNestApplication({ logger: false });
    const nc = await connect({ servers: NATS_URL });
    try {
      attachJetStream(app);
      await app.startAllMicroservices();
      await app.init();
      expect(app.get(ReadinessService).snapshot().nats).toEqual({ ok: true, detail: `connected to NATS at ${new URL(NATS_URL).host}, no consumers bound` });
    } finally {
      await stopProbeApp(app, nc, config);
    }
  });
});
