import { type INestApplication, type LoggerService, Module } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { ConfigError, loadSchedulerConfig, type SchedulerConfig } from '@app/common/config';
import { ensureStream, JetStreamModule } from '@app/common/messaging';
import { ObservabilityModule } from '@app/common/observability';
import { SCHEDULER_CONFIG } from '../scheduler.constants';
import { SchedulerModule } from '../scheduler.module';
import { ALERT_CONSUMER, ALERT_WEBHOOK_OPTIONS, alertBody, type AlertWebhookOptions, AlertWebhookService, webhookRequest } from './alert-webhook.service';
import { NATS_URL, pipelineBuckets } from '../../../../test/support/nats';


async function waitFor(description: string, condition: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${description}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

interface Received {
  method?: string;
  url?: string;
  headers: IncomingHttpHeaders;
  body: Record<string, unknown>;
}

/** A local webhook: answers each request with the next status of `plan` (then the last one forever). */
class Webhook {
  readonly received: Received[] = [];
  plan: number[] = [200];
  private constructor(private readonly server: Server) {}

  static async start(): Promise<Webhook> {
    const server = createServer();
    const webhook = new Webhook(server);
    server.on('request', (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let body: Record<string, unknown>;
        try {
          body = JSON.parse(text) as Record<string, unknown>;
        } catch {
          body = { raw: text };
        }
        webhook.received.push({ method: req.method, url: req.url, headers: req.headers, body });
        const status = webhook.plan.length > 1 ? webhook.plan.shift()! : webhook.plan[0];
        res.writeHead(status, { 'Content-Type': 'text/plain' }).end(status < 300 ? 'ok' : 'nope');
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return webhook;
  }

  get port(): number {
    return (this.server.address() as { port: number }).port;
  }

  url(credentials = ''): string {
    return `http://${credentials}127.0.0.1:${this.port}/hooks/db-fanout`;
  }

  reset(plan: number[]): void {
    this.received.length = 0;
    this.plan = plan;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** Collects what the app logs, to check the one warning and that no secret reaches it. */
class LogCapture implements LoggerService {
  readonly lines: { level: string; text: string }[] = [];
  private add(level: string, message: unknown, ...rest: unknown[]): void {
    this.lines.push({ level, text: [message, ...rest].map(String).join(' ') });
  }
  log(message: unknown, ...rest: unknown[]): void {
    this.add('log', message, ...rest);
  }
  warn(message: unknown, ...rest: unknown[]): void {
    this.add('warn', message, ...rest);
  }
  error(message: unknown, ...rest: unknown[]): void {
    this.add('error', message, ...rest);
  }
  debug(message: unknown, ...rest: unknown[]): void {
    this.add('debug', message, ...rest);
  }
  verbose(message: unknown, ...rest: unknown[]): void {
    this.add('verbose', message, ...rest);
  }
  get all(): string {
    return this.lines.map((line) => line.text).join('\n');
  }
  warnings(): string[] {
    return this.lines.filter((line) => line.level === 'warn').map((line) => line.text);
  }
}

describe('alertBody and webhookRequest', () => {
  it('puts the subject first, the event\'s fields, then the time', () => {
    const at = new Date('2024-01-05T10:00:00Z');
    const body = alertBody('snapshot.load.failed', { snapshotId: '20240105-1a2b3c4d', environment: 'dev', error: 'boom', attempts: 1 }, at);
    expect(body).toEqual({ event: 'snapshot.load.failed', snapshotId: '20240105-1a2b3c4d', environment: 'dev', error: 'boom', attempts: 1, at: '2024-01-05T10:00:00.000Z' });
    expect(Object.keys(body)[0]).toBe('event');
    expect(Object.keys(body).at(-1)).toBe('at');
  });

  it('moves credentials out of the URL into a Basic Authorization header (fetch refuses them in the URL)', () => {
    expect(webhookRequest('https://hooks.example.com/x?y=1')).toEqual({ url: 'https://hooks.example.com/x?y=1', headers: { 'Content-Type': 'application/json' } });
    const request = webhookRequest('https://alert%40ops:p%3Ass@hooks.example.com/x');
    expect(request.url).toBe('https://hooks.example.com/x');
    expect(request.headers.Authorization).toBe(`Basic ${Buffer.from('alert@ops:p:ss').toString('base64')}`);
    // A generated password with a bare %: taken as written, not a URIError that loses every alert.
    expect(webhookRequest('https://alerts:pa%ss@hooks.example.com/x').headers.Authorization).toBe(`Basic ${Buffer.from('alerts:pa%ss').toString('base64')}`);
  });
});

describe('ALERT_WEBHOOK_URL', () => {
  it('is off by default', () => {
    expect(loadSchedulerConfig({}).alertWebhookUrl).toBeUndefined();
    expect(loadSchedulerConfig({ ALERT_WEBHOOK_URL: '  ' }).alertWebhookUrl).toBeUndefined();
  });

  it('takes an http or https URL', () => {
    expect(loadSchedulerConfig({ ALERT_WEBHOOK_URL: 'https://hooks.example.com/db-fanout' }).alertWebhookUrl).toBe('https://hooks.example.com/db-fanout');
    expect(loadSchedulerConfig({ ALERT_WEBHOOK_URL: 'http://u:p@127.0.0.1:8080/x' }).alertWebhookUrl).toBe('http://u:p@127.0.0.1:8080/x');
  });

  it.each(['ftp://u:s3cret@host/x', 'not a url s3cret', 'postgres://u:s3cret@host/db'])('refuses %s without echoing it', (value) => {
    let error: unknown;
    try {
      loadSchedulerConfig({ ALERT_WEBHOOK_URL: value });
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).problems).toHaveLength(1);
    expect((error as ConfigError).message).toContain('ALERT_WEBHOOK_URL');
    expect((error as ConfigError).message).not.toContain('s3cret');
  });
});

describe('AlertWebhookService (real NATS, local webhook)', () => {
  const id = randomBytes(4).toString('hex');
  const stream = `SPEC_ALERTS_${id}`;
  const prefix = `spec_alerts_${id}.`;
  const options: AlertWebhookOptions = { retryDelaysMs: [30, 60, 120], timeoutMs: 2_000 };
  let nc: NatsConnection;
  let webhook: Webhook;
  let app: INestApplication | undefined;
  let logs: LogCapture;

  const configWith = (env: Record<string, string>): SchedulerConfig =>
    loadSchedulerConfig({ NATS_URL, NATS_STREAM: stream, NATS_SUBJECT_PREFIX: prefix, SCHEDULE: '0 0 1 1 *', ...env });

  /** Only the alert service (no cron job, no run ledger), with short retry delays. */
  async function startAlerts(config: SchedulerConfig, overrides: Partial<AlertWebhookOptions> = {}): Promise<INestApplication> {
    @Module({
      imports: [ObservabilityModule.forRoot(), JetStreamModule.forRoot({ config: config.nats, clientName: 'spec-alerts', bindings: [] })],
      providers: [{ provide: SCHEDULER_CONFIG, useValue: config }, { provide: ALERT_WEBHOOK_OPTIONS, useValue: { ...options, ...overrides } }, AlertWebhookService],
    })
    class AlertsOnly {}
    const moduleRef = await Test.createTestingModule({ imports: [AlertsOnly] }).compile();
    logs = new LogCapture();
    moduleRef.useLogger(logs);
    const started = moduleRef.createNestApplication({ logger: logs });
    await started.init();
    return started;
  }

  const publish = async (subject: string, payload: object): Promise<void> => {
    await jetstream(nc).publish(`${prefix}${subject}`, JSON.stringify(payload));
  };
  const consumerInfo = async () => (await jetstreamManager(nc)).consumers.info(stream, ALERT_CONSUMER.durable);

  beforeAll(async () => {
    nc = await connect({ servers: NATS_URL });
    webhook = await Webhook.start();
    await ensureStream(await jetstreamManager(nc), configWith({}).nats);
  });

  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  afterAll(async () => {
    await (await jetstreamManager(nc)).streams.delete(stream).catch(() => undefined);
    for (const bucket of pipelineBuckets(stream)) await (await jetstreamManager(nc)).streams.delete(`KV_${bucket}`).catch(() => undefined);
    await nc.close();
    await webhook.close();
  });

  it('is registered in the scheduler, and without ALERT_WEBHOOK_URL creates no consumer and posts nothing', async () => {
    const moduleRef = await Test.createTestingModule({ imports: [SchedulerModule.forRoot(configWith({}))] }).compile();
    moduleRef.useLogger(false);
    app = moduleRef.createNestApplication();
    await app.init();
    expect(app.get(AlertWebhookService)).toBeInstanceOf(AlertWebhookService);
    await publish('snapshot.failed', { date: '2024-01-04', error: 'before alerts existed', attempts: 3 });
    await new Promise((resolve) => setTimeout(resolve, 300));
    await expect(consumerInfo()).rejects.toThrow(/consumer not found/i);
    expect(webhook.received).toEqual([]);
  });

  it('starts at new events, skips the others, and retries a 500 until the webhook takes it', async () => {
    webhook.reset([500, 500, 200]);
    app = await startAlerts(configWith({ ALERT_WEBHOOK_URL: webhook.url() }));
    // NATS 2.9 accepts `snapshot.>` as the filter of a stream holding `replication.trigger` and `snapshot.>`.
    const info = await consumerInfo();
    expect(info.config).toMatchObject({ filter_subject: `${prefix}snapshot.>`, deliver_policy: 'new', ack_policy: 'explicit' });

    await publish('replication.trigger', { date: '2024-01-05' });
    await publish('snapshot.ready', { snapshotId: '20240105-1a2b3c4d', date: '2024-01-05' });
    await publish('snapshot.loaded', { snapshotId: '20240105-1a2b3c4d', environment: 'qa', rows: 1, durationMs: 1, attempts: 1 });
    const before = Date.now();
    await publish('snapshot.load.failed', { snapshotId: '20240105-1a2b3c4d', environment: 'dev', error: 'column public.products."attrs" is missing', attempts: 1 });

    await waitFor('three POSTs and the ack', () => webhook.received.length === 3 && logs.all.includes('alert sent'));
    for (const request of webhook.received) {
      expect(request.method).toBe('POST');
      expect(request.url).toBe('/hooks/db-fanout');
      expect(request.headers['content-type']).toBe('application/json');
      expect(request.headers.authorization).toBeUndefined();
      expect(request.body).toEqual(webhook.received[0].body);
    }
    const { at, ...rest } = webhook.received[0].body;
    expect(rest).toEqual({ event: 'snapshot.load.failed', snapshotId: '20240105-1a2b3c4d', environment: 'dev', error: 'column public.products."attrs" is missing', attempts: 1 });
    expect(typeof at).toBe('string');
    expect(new Date(at as string).toISOString()).toBe(at);
    expect(Math.abs(new Date(at as string).getTime() - before)).toBeLessThan(5_000);
    expect(logs.warnings()).toEqual([]);

    await waitFor('every event acked', async () => {
      const after = await consumerInfo();
      return after.num_pending === 0 && after.num_ack_pending === 0 && after.delivered.stream_seq === after.ack_floor.stream_seq;
    });
    // snapshot.failed from the first test was published before this consumer existed: not replayed.
    expect(webhook.received.some((request) => request.body.event === 'snapshot.failed')).toBe(false);
  });

  it('gives up after the last retry with one warning naming only the webhook host (no password, no path), and acks', async () => {
    webhook.reset([503]);
    app = await startAlerts(configWith({ ALERT_WEBHOOK_URL: webhook.url('alerts:hunter2-s3cret@') }));
    await publish('snapshot.failed', { date: '2024-01-06', error: 'source database unreachable', attempts: 3 });

    await waitFor('the warning', () => logs.warnings().length > 0);
    expect(webhook.received).toHaveLength(options.retryDelaysMs.length + 1);
    expect(webhook.received[0].body).toMatchObject({ event: 'snapshot.failed', date: '2024-01-06', error: 'source database unreachable', attempts: 3 });
    expect(webhook.received[0].headers.authorization).toBe(`Basic ${Buffer.from('alerts:hunter2-s3cret').toString('base64')}`);
    const warnings = logs.warnings();
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('snapshot.failed');
    expect(warnings[0]).toContain('4 attempts');
    expect(warnings[0]).toContain('HTTP 503');
    // Scheme and host only: neither the password nor a path (where webhook secrets often live) is shown.
    expect(warnings[0]).toContain(`http://127.0.0.1:${webhook.port}/...`);
    expect(logs.all).not.toContain('hunter2');
    expect(logs.all).not.toContain('/hooks/db-fanout');

    await waitFor('the ack', async () => {
      const info = await consumerInfo();
      return info.num_pending === 0 && info.num_ack_pending === 0;
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(webhook.received).toHaveLength(4); // acked: never sent again
  });

  it('counts an unreachable webhook as a failed attempt, never logging its credentials', async () => {
    const closed = await Webhook.start();
    const url = closed.url('ops:t0ps3cret@');
    await closed.close();
    app = await startAlerts(configWith({ ALERT_WEBHOOK_URL: url }), { retryDelaysMs: [10] });
    await publish('snapshot.load.failed', { snapshotId: '20240107-1a2b3c4d', environment: 'qa', error: 'x', attempts: 2 });
    await waitFor('the warning', () => logs.warnings().length > 0);
    expect(logs.warnings()[0]).toMatch(/2 attempts.*ECONNREFUSED/);
    expect(logs.all).not.toContain('t0ps3cret');
  });

  it('stops at once in the middle of its retries, and the next scheduler sends the alert', async () => {
    webhook.reset([500, 200]);
    app = await startAlerts(configWith({ ALERT_WEBHOOK_URL: webhook.url() }), { retryDelaysMs: [60_000] });
    await publish('snapshot.load.failed', { snapshotId: '20240108-1a2b3c4d', environment: 'staging', error: 'y', attempts: 1 });
    await waitFor('the first attempt', () => webhook.received.length === 1);
    const closing = Date.now();
    await app.close();
    app = undefined;
    expect(Date.now() - closing).toBeLessThan(5_000);

    app = await startAlerts(configWith({ ALERT_WEBHOOK_URL: webhook.url() }));
    await waitFor('the redelivered alert', () => webhook.received.length === 2);
    expect(webhook.received[1].body).toMatchObject({ event: 'snapshot.load.failed', environment: 'staging' });
  });
});
