import { Inject, Injectable, Logger, type OnApplicationBootstrap, type OnApplicationShutdown, Optional } from '@nestjs/common';
import { jetstreamManager, type JsMsg } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { setTimeout as sleep } from 'node:timers/promises';
import { type SchedulerConfig } from '@app/common/config';
import { SUBJECTS } from '@app/common/contract';
import { ACK, type ConsumerBinding, ensureConsumer, nak, NATS_CONNECTION, PullConsumer } from '@app/common/messaging';
import { errorMessage, ReadinessService, redactSecrets } from '@app/common/observability';
import { SCHEDULER_CONFIG } from '../scheduler.constants';

/** The events worth waking someone for: the dump gave up, or one environment's load failed. */
export const ALERT_SUBJECTS: readonly string[] = [SUBJECTS.snapshotFailed, SUBJECTS.snapshotLoadFailed];

/** Injection token for {@link AlertWebhookOptions}; optional, the defaults suit production. */
export const ALERT_WEBHOOK_OPTIONS = Symbol('ALERT_WEBHOOK_OPTIONS');

export interface AlertWebhookOptions {
  /** Waits between attempts: one attempt, then one more after each delay. */
  retryDelaysMs: number[];
  /** How long one POST may take before it counts as failed. */
  timeoutMs: number;
}

export const DEFAULT_ALERT_WEBHOOK_OPTIONS: AlertWebhookOptions = { retryDelaysMs: [1_000, 2_000, 4_000, 8_000], timeoutMs: 10_000 };

/**
 * The scheduler's own durable consumer for alerts, shared by every scheduler replica (one POST per
 * event however many run). A new one starts at new messages: enabling alerts never replays old failures.
 * NATS 2.9 takes one filter subject per consumer, so it reads `snapshot.>` and skips the rest.
 */
export const ALERT_CONSUMER: ConsumerBinding = { pattern: 'snapshot.>', durable: 'alerts', startAt: 'new', maxDeliver: 10 };

/** What is POSTed: `{ event, ...the event's fields, at }`. */
export function alertBody(subject: string, payload: Record<string, unknown>, at: Date): Record<string, unknown> {
  return { event: subject, ...payload, at: at.toISOString() };
}

/**
 * A user name or password as written in the URL, percent-decoded; one with a `%` that starts no
 * escape (a generated password `pa%ss`) is taken as written. Decoding it threw for every alert, and
 * every alert was lost.
 */
function decodedOrAsIs(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

/**
 * `fetch` refuses a URL carrying credentials, so `https://user:pass@host/hook` becomes the URL
 * without them plus a Basic Authorization header.
 */
export function webhookRequest(url: string): { url: string; headers: Record<string, string> } {
  const parsed = new URL(url);
  const headers: Record<string, string> = { 'Content-Type': 'application/json' };
  if (parsed.username || parsed.password) {
    const credentials = `${decodedOrAsIs(parsed.username)}:${decodedOrAsIs(parsed.password)}`;
    headers.Authorization = `Basic ${Buffer.from(credentials).toString('base64')}`;
    parsed.username = '';
    parsed.password = '';
  }
  return { url: parsed.toString(), headers };
}

/**
 * ALERT_WEBHOOK_URL (off by default, as in the original DAG): every `snapshot.failed` and
 * `snapshot.load.failed` is POSTed as JSON, retried with backoff. The pipeline apps know nothing of
 * it; an unreachable webhook delays only the next alert. Each event is acked once the webhook
 * answered 2xx or the attempts ran out (one warning then).
 */
@Injectable()
export class AlertWebhookService implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger('Alerts');
  private readonly options: AlertWebhookOptions;
  private readonly shutdown = new AbortController();
  private loop?: Promise<void>;

  constructor(
    @Inject(NATS_CONNECTION) private readonly connection: NatsConnection,
    @Inject(SCHEDULER_CONFIG) private readonly config: SchedulerConfig,
    private readonly readiness: ReadinessService,
    @Optional() @Inject(ALERT_WEBHOOK_OPTIONS) options?: Partial<AlertWebhookOptions>,
  ) {
    this.options = { ...DEFAULT_ALERT_WEBHOOK_OPTIONS, ...options };
  }

  /**
   * The webhook as it may appear in a log line: scheme and host only. Webhook URLs often carry
   * their secret in the path (Slack's /services/T.../B.../XXXX), where no masking could find it.
   */
  private get shownUrl(): string {
    try {
      return `${new URL(this.config.alertWebhookUrl ?? '').origin}/...`;
    } catch {
      return '(invalid URL)';
    }
  }

  async onApplicationBootstrap(): Promise<void> {
    if (!this.config.alertWebhookUrl) return; // off: no consumer, no check, nothing to do
    // Until the consumer exists, failures published now would be missed (it starts at new ones),
    // so /health waits for it; a broker that refuses it does not stop the scheduler from booting.
    this.readiness.set('alerts', false, `creating consumer ${ALERT_CONSUMER.durable}`);
    const ensure = async () => ensureConsumer(await jetstreamManager(this.connection), this.config.nats, ALERT_CONSUMER);
    try {
      await ensure();
      this.readiness.set('alerts', true, `webhook ${this.shownUrl}`);
      this.logger.log(`failures are POSTed to ${this.shownUrl}`);
    } catch (error) {
      this.readiness.set('alerts', false, `consumer ${ALERT_CONSUMER.durable}: ${errorMessage(error)}`);
      this.logger.warn(`cannot set up consumer ${ALERT_CONSUMER.durable} yet; retrying every second`);
    }
    const consumer = new PullConsumer({
      connection: this.connection,
      stream: this.config.nats.stream,
      name: ALERT_CONSUMER.durable,
      ensure,
      logger: this.logger,
      expiresMs: 2_000,
      onHealth: (ok, detail) => this.readiness.set('alerts', ok, ok ? `webhook ${this.shownUrl}` : detail),
    });
    // Stopped mid-way (false): nak, so the next scheduler to run sends it (at least once).
    this.loop = consumer.run(async (message) => ((await this.handle(message)) ? ACK : nak()), this.shutdown.signal);
  }

  async onApplicationShutdown(): Promise<void> {
    this.shutdown.abort();
    await this.loop;
  }

  private pause(ms: number): Promise<void> {
    return sleep(ms, undefined, { signal: this.shutdown.signal }).catch(() => undefined);
  }

  /** True when the event is dealt with (sent, given up on, or no alert); false when stopped mid-way. */
  private async handle(message: JsMsg): Promise<boolean> {
    const prefix = this.config.nats.subjectPrefix;
    const subject = message.subject.startsWith(prefix) ? message.subject.slice(prefix.length) : message.subject;
    if (!ALERT_SUBJECTS.includes(subject)) return true;
    let payload: unknown;
    try {
      const text = message.string();
      payload = text.trim() ? JSON.parse(text) : {};
    } catch {
      this.logger.warn(`no alert for ${subject} #${message.seq}: its body is not JSON`);
      return true;
    }
    if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) {
      this.logger.warn(`no alert for ${subject} #${message.seq}: its body is not a JSON object`);
      return true;
    }
    return this.post(subject, alertBody(subject, payload as Record<string, unknown>, message.time));
  }

  private describe(body: Record<string, unknown>): string {
    const parts = [body.event, body.environment, body.snapshotId ?? body.date].filter((part) => typeof part === 'string');
    return parts.join(' ');
  }

  private async post(subject: string, body: Record<string, unknown>): Promise<boolean> {
    const request = webhookRequest(this.config.alertWebhookUrl!);
    const attempts = this.options.retryDelaysMs.length + 1;
    let lastProblem = '';
    for (let attempt = 1; attempt <= attempts; attempt++) {
      if (this.shutdown.signal.aborted) return false;
      try {
        const response = await fetch(request.url, {
          method: 'POST',
          headers: request.headers,
          body: JSON.stringify(body),
          signal: AbortSignal.any([this.shutdown.signal, AbortSignal.timeout(this.options.timeoutMs)]),
        });
        await response.arrayBuffer().catch(() => undefined); // free the connection
        if (response.ok) {
          this.logger.log(`alert sent: ${this.describe(body)} (HTTP ${response.status}${attempt > 1 ? `, attempt ${attempt}` : ''})`);
          return true;
        }
        lastProblem = `HTTP ${response.status}`;
      } catch (error) {
        if (this.shutdown.signal.aborted) return false;
        lastProblem = this.problemOf(error);
      }
      const delay = this.options.retryDelaysMs[attempt - 1];
      if (delay === undefined) break;
      this.logger.debug(`alert ${subject} attempt ${attempt} of ${attempts} failed (${lastProblem}); next in ${delay}ms`);
      await this.pause(delay);
    }
    this.logger.warn(`alert NOT delivered: ${this.describe(body)} could not be POSTed to ${this.shownUrl} after ${attempts} attempts (last: ${lastProblem}); giving up on it`);
    return true;
  }

  /** fetch says "fetch failed" and puts the reason in `cause`; a timeout is a TimeoutError. */
  private problemOf(error: unknown): string {
    // Duck-typed: fetch's errors may come from another realm (instanceof Error fails under jest).
    const { name, message, cause } = (typeof error === 'object' && error !== null ? error : {}) as { name?: unknown; message?: unknown; cause?: unknown };
    if (name === 'TimeoutError') return `no answer within ${this.options.timeoutMs}ms`;
    const text = typeof message === 'string' ? message : String(error);
    const why = typeof cause === 'object' && cause !== null && typeof (cause as { message?: unknown }).message === 'string' ? `: ${(cause as { message: string }).message}` : '';
    return redactSecrets(`${text}${why}`);
  }
}
