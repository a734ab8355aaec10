import { Inject, Injectable, Logger } from '@nestjs/common';
import { setTimeout as sleep } from 'node:timers/promises';
import { JetStreamApiCodes, JetStreamApiError, jetstream, type JetStreamClient, type PubAck } from '@nats-io/jetstream';
import { headers as natsHeaders, type NatsConnection } from '@nats-io/transport-node';
import type { NatsConfig } from '../config/app-config';
import type { Subject } from '../contract/subjects';
import { errorMessage } from '../observability/redact';
import { retryDelay, type RetryPolicy } from '../resilience/retry';
import { NATS_CONFIG, NATS_CONNECTION } from './jetstream.constants';

/**
 * How long a JetStream call is tried through broker trouble (a restart, a cluster electing
 * leaders): about 45 s from its first try, each try's own wait for an answer included. (Counted as
 * pauses only, 1 + 6 tries each waiting out a 5 s request timeout took about 80 s.)
 */
export const BROKER_RETRY_BUDGET_MS = 45_000;
/** Pauses between tries: 1, 2, 4, 8, 15, 15... s, as long as the budget lasts. */
const BROKER_RETRY_PAUSES: RetryPolicy = { retries: Number.POSITIVE_INFINITY, delayMs: 1_000, backoff: 'exponential', maxDelayMs: 15_000 };
/** A try is not started with less than this left of the budget: it could not get an answer in time. */
const MIN_TRY_MS = 1_000;
/** How long one publish waits for the stream's ack (nats.js's default), never past the budget. */
export const PUBLISH_TIMEOUT_MS = 5_000;
/** The one try of a call begun after the app's stop: as long as a publish's. */
const STOPPING_TRY_MS = PUBLISH_TIMEOUT_MS;

/**
 * A JetStream call given up because the app is stopping (withBrokerRetry's `signal`), not because
 * the broker refused it: the caller hands its message back, and the redelivery does the work again
 * (a load's announcement from the ledger, a dump's trigger). Named AbortError, as Node names what a
 * stop cuts short (JetStreamContext.lastDeliveryFailure counts it as the stop's doing).
 */
export class BrokerCallStoppedError extends Error {
  override readonly name = 'AbortError';
  readonly code = 'stopping';
}

export interface BrokerRetryOptions {
  /** False for an error that fails the same way every time: thrown at once. All are retried by default. */
  retryable?: (error: unknown) => boolean;
  /**
   * The app's stop signal (JetStreamContext.getShutdownSignal()). Once it aborts nothing is tried
   * again: a try in flight or a pause is cut short, and the call rejects with BrokerCallStoppedError.
   * A call begun after the stop gets one try of at most 5 s (the stream may well take it: a load
   * that committed during the stop is announced, a last delivery's failure reported), no retries.
   */
  signal?: AbortSignal;
}

/**
 * Runs a JetStream call again through about 45 s of broker trouble (BROKER_RETRY_BUDGET_MS, the
 * tries' own waits for an answer included): every failure is retried unless the connection is
 * closed, `retryable` says no or the budget is spent (the last error is thrown then), or the app
 * stops (BrokerRetryOptions.signal). `work` is given the time left of the budget, which bounds its
 * wait for an answer. `onRetry` hears of each retry (`what failed (attempt n), retrying in s (up to
 * s more): why`).
 */
export async function withBrokerRetry<T>(
  connection: NatsConnection,
  what: string,
  work: (timeoutMs: number) => Promise<T>,
  onRetry: (line: string) => void,
  { retryable = () => true, signal }: BrokerRetryOptions = {},
): Promise<T> {
  const deadline = Date.now() + BROKER_RETRY_BUDGET_MS;
  // Begun after the stop: one short try, not cut short by the stop itself.
  const stoppedBefore = signal?.aborted === true;
  const watch = stoppedBefore ? undefined : signal;
  for (let attempt = 1; ; attempt++) {
    let failure: unknown;
    try {
      // The budget bounds the try too (a read's setup waits on requests of its own).
      const left = stoppedBefore ? STOPPING_TRY_MS : Math.max(MIN_TRY_MS, deadline - Date.now());
      return await within(work(left), left, watch, what, attempt);
    } catch (error) {
      if (error instanceof BrokerCallStoppedError) throw error;
      failure = error;
    }
    if (!retryable(failure) || connection.isClosed()) throw failure;
    if (signal?.aborted) throw stopped(what, `after ${attempt} attempt(s), the last: ${errorMessage(failure)}`, failure);
    // The last pause shortened to leave a try its second: the budget is the whole call's.
    const pause = Math.min(retryDelay(BROKER_RETRY_PAUSES, attempt), deadline - Date.now() - MIN_TRY_MS);
    if (pause < 0) throw failure;
    onRetry(`${what} failed (attempt ${attempt}), retrying in ${formatSeconds(pause)} (for up to ${formatSeconds(deadline - Date.now())} more): ${errorMessage(failure)}`);
    try {
      await sleep(pause, undefined, { signal: watch });
    } catch {
      throw stopped(what, `after ${attempt} attempt(s), the last: ${errorMessage(failure)}`, failure);
    }
  }
}

function formatSeconds(ms: number): string {
  return `${Math.round(ms / 100) / 10} s`;
}

function stopped(what: string, detail: string, lastError?: unknown): BrokerCallStoppedError {
  return new BrokerCallStoppedError(`${what} given up: the app is stopping (${detail})`, lastError === undefined ? undefined : { cause: lastError });
}

/**
 * `pending`, unless `ms` pass first (a TimeoutError: the try is abandoned) or `signal` aborts
 * (BrokerCallStoppedError). A late answer of an abandoned try is ignored.
 */
function within<T>(pending: Promise<T>, ms: number, signal: AbortSignal | undefined, what: string, attempt: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const finish = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    };
    const onAbort = () => {
      finish();
      reject(stopped(what, `attempt ${attempt} cut short`));
    };
    const timer = setTimeout(() => {
      finish();
      reject(Object.assign(new Error(`${what}: no answer within ${formatSeconds(ms)}`), { name: 'TimeoutError' }));
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
    pending.then(resolve, reject).finally(finish);
  });
}

export interface PublishOptions {
  /** Sent beside the body (e.g. TRIGGER_SEQ_HEADER). */
  headers?: Record<string, string>;
  /** Stored only if the subject's last message is still this one (0: none); see isOutrunPublish. */
  expectLastSubjectSequence?: number;
  /** The app's stop signal: see BrokerRetryOptions.signal. */
  signal?: AbortSignal;
}

/**
 * Publishes pipeline events into the stream and waits for the broker's ack, so a publish that
 * returns has been stored. A message id lets the server drop duplicates of a retried publish.
 */
@Injectable()
export class EventPublisher {
  private readonly js: JetStreamClient;

  private readonly logger = new Logger('Events');

  constructor(
    @Inject(NATS_CONNECTION) private readonly connection: NatsConnection,
    @Inject(NATS_CONFIG) private readonly config: NatsConfig,
  ) {
    this.js = jetstream(connection);
  }

  /**
   * Retries through about 45 s of broker trouble (withBrokerRetry) before giving up. With a message
   * id a retried publish that did reach the stream is dropped as a duplicate. `headers` travel
   * beside the body (e.g. TRIGGER_SEQ_HEADER). With `expectLastSubjectSequence` the stream stores the
   * message only if the subject's last message is still that one (0: none); otherwise the publish
   * throws at once, without retrying (see isOutrunPublish). With `signal` (the app's stop signal) a
   * stop ends the retries at once with BrokerCallStoppedError; a handler hands its message back then.
   * Returns the stream's ack: `duplicate` when the stream held a message with this id already (within
   * its duplicate window) and dropped this one.
   */
  async publish(subject: Subject, payload: object, msgID?: string, { headers, expectLastSubjectSequence, signal }: PublishOptions = {}): Promise<PubAck> {
    const body = JSON.stringify(payload);
    let hdrs: ReturnType<typeof natsHeaders> | undefined;
    if (headers) {
      hdrs = natsHeaders();
      for (const [name, value] of Object.entries(headers)) hdrs.set(name, value);
    }
    const options = {
      ...(msgID ? { msgID } : {}),
      ...(hdrs ? { headers: hdrs } : {}),
      ...(expectLastSubjectSequence === undefined ? {} : { expect: { lastSubjectSequence: expectLastSubjectSequence } }),
    };
    return withBrokerRetry(
      this.connection,
      `publishing ${subject}`,
      (timeoutMs) => this.js.publish(`${this.config.subjectPrefix}${subject}`, body, { ...options, timeout: Math.min(PUBLISH_TIMEOUT_MS, timeoutMs) }),
      (line) => this.logger.warn(line),
      { retryable: (error) => !isOutrunPublish(error), signal },
    );
  }
}

/**
 * The stream refused a publish because another message reached its subject first
 * (expectLastSubjectSequence): 10071 on nats-server 2.9; newer servers answer 10164 while another
 * publish to the subject is still in flight.
 */
export function isOutrunPublish(error: unknown): boolean {
  return (
    error instanceof JetStreamApiError &&
    (error.code === JetStreamApiCodes.StreamWrongLastSequence || error.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}
