import type { Logger } from '@nestjs/common';
import { AckPolicy, type Consumer, type ConsumerConfig, jetstream, type JsMsg } from '@nats-io/jetstream';
import { millis, type NatsConnection } from '@nats-io/transport-node';
import { setTimeout as sleep } from 'node:timers/promises';
import { errorMessage } from '../observability/redact';

/** What becomes of a message once its handler is done with it. */
export type Disposition = { kind: 'ack' } | { kind: 'nak'; delayMs?: number } | { kind: 'term' };

/** Done: the broker forgets the message. */
export const ACK: Disposition = { kind: 'ack' };
/** Proven never to succeed: the broker stops delivering it. */
export const TERM: Disposition = { kind: 'term' };
/** Not done yet: delivered again, after `delayMs` when given. */
export function nak(delayMs?: number): Disposition {
  return { kind: 'nak', delayMs };
}

/** The consumer's settings as the broker holds them: heartbeats and "last delivery" follow these, not ours. */
export interface ConsumerSettings {
  ackWaitMs: number;
  /** Deliveries of one message before the broker gives up on it; -1 is unlimited. */
  maxDeliver: number;
  maxAckPending: number;
  /** False for AckPolicy.None (a reader that settles nothing). */
  explicitAck: boolean;
}

export function consumerSettings(config: ConsumerConfig): ConsumerSettings {
  return {
    ackWaitMs: config.ack_wait ? millis(config.ack_wait) : 30_000,
    maxDeliver: config.max_deliver ?? -1,
    maxAckPending: config.max_ack_pending ?? -1,
    explicitAck: config.ack_policy !== AckPolicy.None,
  };
}

/** True when the broker will not hand this message out again after this delivery. */
export function isLastDeliveryOf(message: JsMsg, settings: ConsumerSettings): boolean {
  return settings.maxDeliver > 0 && message.info.deliveryCount >= settings.maxDeliver;
}

export type MessageHandler = (message: JsMsg, settings: ConsumerSettings) => Promise<Disposition>;

export interface PullConsumerOptions {
  connection: NatsConnection;
  stream: string;
  /** The consumer's name (durable or ephemeral). */
  name: string;
  /**
   * Creates the consumer when it is missing and brings its configuration in line. Run before the
   * consumer is (re)attached: at the start and after every failed pull (deleted, stream recreated).
   */
  ensure?: () => Promise<unknown>;
  logger: Logger;
  /** How long one pull waits for a message; a stop is noticed at most this late. */
  expiresMs?: number;
  /** Pause after a failed pull or attach before trying again. */
  retryDelayMs?: number;
  /** Told when pulling starts working again and when it fails (e.g. a readiness check). */
  onHealth?: (ok: boolean, detail: string) => void;
}

const DEFAULT_EXPIRES_MS = 5_000;
/** How long past its expiry a pull may go without delivering or failing before it is given up. */
const PULL_GRACE_MS = 10_000;
const STOPPED = Symbol('stopped');

/**
 * A pull, waited for only until the app stops or `ms` pass. nats.js's next() can miss the end of a
 * connection that closed as the pull went out (no "server shutdown" status, no missed-heartbeat
 * error) and never settle: the loop waited on it for ever, so a SIGTERM with the broker gone never
 * finished (seen on a busy machine), and a consumer that met it otherwise stopped pulling for good.
 * Given up, it fails like a broker error (the loop sets the consumer up again); a message it still
 * delivers later is handed back at once.
 */
function pullWithin(pull: Promise<JsMsg | null>, ms: number, signal: AbortSignal, label: string, logger: Logger): Promise<JsMsg | null | typeof STOPPED> {
  return new Promise((resolve, reject) => {
    const abandon = () => void pull.then((late) => late && settle(late, nak(), logger), () => undefined);
    const finish = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
    };
    const onAbort = () => {
      finish();
      abandon();
      resolve(STOPPED);
    };
    const timer = setTimeout(() => {
      finish();
      abandon();
      reject(Object.assign(new Error(`a pull from ${label} neither delivered nor failed within ${ms / 1000} s`), { code: 'ETIMEDOUT' }));
    }, ms);
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    pull.then(
      (message) => {
        finish();
        resolve(message);
      },
      (error: unknown) => {
        finish();
        reject(error instanceof Error ? error : new Error(String(error)));
      },
    );
  });
}
/** Redelivery delay after a handler threw: soon, but not a hot loop. */
const MAX_NAK_DELAY_MS = 5_000;

/**
 * The one JetStream pull loop of the project: pull one message at a time (the pull's idle heartbeats
 * make a vanished consumer or a lost server fail the pull instead of hanging), keep the message ours
 * with `working()` at a third of the broker's ack wait while its handler runs, then ack, nak or
 * term as the handler says. A failed pull re-creates the consumer and tries again; a stop lets the
 * in-flight handler finish and settles its message before returning.
 */
export class PullConsumer {
  private consumer?: Consumer;
  private settings?: ConsumerSettings;
  /** Undefined until the first attach; flips with every failed or working pull. */
  private healthy?: boolean;

  constructor(private readonly options: PullConsumerOptions) {}

  private get label(): string {
    return `consumer ${this.options.name}`;
  }

  /** The broker's settings of the consumer (read when it was last attached). */
  get current(): ConsumerSettings | undefined {
    return this.settings;
  }

  /** Handles messages until `signal` aborts, riding out broker restarts and a deleted consumer. */
  async run(handle: MessageHandler, signal: AbortSignal): Promise<void> {
    const retryDelayMs = this.options.retryDelayMs ?? 1_000;
    while (!signal.aborted) {
      let message: JsMsg | null;
      let settings: ConsumerSettings;
      try {
        ({ settings } = await this.attach());
        const expires = this.options.expiresMs ?? DEFAULT_EXPIRES_MS;
        const pulled = await pullWithin(this.consumer!.next({ expires }), expires + PULL_GRACE_MS, signal, this.label, this.options.logger);
        if (pulled === STOPPED) break;
        message = pulled;
      } catch (error) {
        if (signal.aborted) break;
        this.failed(error);
        await sleep(retryDelayMs, undefined, { signal }).catch(() => undefined);
        continue;
      }
      this.recovered();
      if (!message) {
        await this.refreshSettings();
        continue;
      }
      if (signal.aborted) {
        settle(message, nak(), this.options.logger); // fetched while stopping: hand it back untouched
        break;
      }
      await this.dispatch(message, settings, handle, signal);
    }
  }

  /**
   * Handles every message the consumer has pending, then returns: done when a message says nothing
   * follows it (its `pending` is 0) or the consumer reports num_pending 0. An empty pull is not the
   * end (the broker may just be slow); a broker that does not answer, or a list not read in
   * `timeoutMs`, throws, so a caller never acts on part of the list. So does, on an `AckPolicy.None`
   * consumer, a delivery that never reached this reader: such a message lost in transit (a reconnect
   * while it was on its way) is never sent again, and the consumer's numbering of its deliveries is
   * the only sign of it: a gap before a later one, or, for the last, a count beyond what arrived.
   * (An explicit-ack consumer sends a lost or held message again; it is not checked.)
   */
  async readToEnd(handle: MessageHandler, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    // Newly attached, the consumer's cached info is the one it was just fetched with; a reader used
    // before holds the info of its last read, which knows nothing of messages published since.
    const attaching = !this.consumer;
    const { consumer, settings } = await this.attach();
    const start = await consumer.info(attaching);
    const checked = !settings.explicitAck;
    let pending = start.num_pending;
    let delivered = start.delivered.consumer_seq;
    // The consumer's own delivery count, when its info was the last thing read (no message since).
    let counted: number | undefined = start.delivered.consumer_seq;
    while (pending > 0) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.label} still had ${pending} messages pending after ${timeoutMs}ms: the list is incomplete`);
      const message = await consumer.next({ expires: Math.max(1_000, Math.min(left, this.options.expiresMs ?? DEFAULT_EXPIRES_MS)) });
      if (message) {
        const sequence = message.info.deliverySequence;
        if (checked && sequence !== delivered + 1) throw this.lostDelivery(delivered + 1, `delivery ${sequence} came next`);
        delivered = sequence;
        counted = undefined;
        await this.dispatch(message, settings, handle);
        pending = message.info.pending;
      } else {
        const info = await consumer.info();
        pending = info.num_pending;
        counted = info.delivered.consumer_seq;
      }
    }
    // A lost last delivery has no later one to show the gap; the consumer's own count does.
    if (checked) {
      const sent = counted ?? (await consumer.info()).delivered.consumer_seq;
      if (sent !== delivered) throw this.lostDelivery(delivered + 1, `the consumer counts ${sent} deliveries, ${delivered} arrived`);
    }
  }

  private lostDelivery(sequence: number, why: string): Error {
    return new Error(`${this.label}: delivery ${sequence} never reached this reader (${why}; lost on its way, or taken by another reader): the list is incomplete`);
  }

  private async attach(): Promise<{ consumer: Consumer; settings: ConsumerSettings }> {
    if (!this.consumer || !this.settings) {
      await this.options.ensure?.();
      const consumer = await jetstream(this.options.connection).consumers.get(this.options.stream, this.options.name);
      this.settings = consumerSettings((await consumer.info(true)).config);
      this.consumer = consumer;
    }
    return { consumer: this.consumer, settings: this.settings };
  }

  /**
   * Idle: read the consumer's settings again, so an operator's `nats consumer edit` (ack wait,
   * max deliver) is followed from the next message on, not from the next restart.
   */
  private async refreshSettings(): Promise<void> {
    try {
      if (this.consumer) this.settings = consumerSettings((await this.consumer.info()).config);
    } catch {
      // The next pull tells whether the consumer is still there.
    }
  }

  private failed(error: unknown): void {
    // The consumer may be gone (deleted, stream recreated): set it up again before the next pull.
    this.consumer = undefined;
    const detail = `reading ${this.label} failed: ${errorMessage(error)}`;
    if (this.healthy !== false) this.options.logger.warn(`${detail}; retrying every ${this.options.retryDelayMs ?? 1_000}ms`);
    this.healthy = false;
    this.options.onHealth?.(false, detail);
  }

  private recovered(): void {
    if (this.healthy === true) return;
    if (this.healthy === false) this.options.logger.log(`reading ${this.label} again`);
    this.healthy = true;
    this.options.onHealth?.(true, `reading ${this.label}`);
  }

  private async dispatch(message: JsMsg, settings: ConsumerSettings, handle: MessageHandler, stopping?: AbortSignal): Promise<void> {
    // Keep the message ours while the handler runs (a load can outlast the ack wait many times).
    const heartbeat = settings.explicitAck
      ? setInterval(() => {
          try {
            message.working();
          } catch {
            // The connection is closing: the broker redelivers after the ack wait.
          }
        }, Math.max(200, Math.floor(settings.ackWaitMs / 3)))
      : undefined;
    let disposition: Disposition;
    try {
      disposition = await handle(message, settings);
    } catch (error) {
      this.options.logger.warn(`could not handle ${message.subject} #${message.seq}, will be redelivered: ${errorMessage(error)}`);
      disposition = nak(Math.min(MAX_NAK_DELAY_MS, settings.ackWaitMs));
    } finally {
      clearInterval(heartbeat);
    }
    if (!settings.explicitAck) return;
    if (disposition.kind === 'ack') {
      if (!(await confirmAck(this.options.connection, message, settings.ackWaitMs, this.options.logger, stopping))) {
        this.options.logger.warn(`ack of ${message.subject} #${message.seq} was not confirmed within the ack wait; a redelivery will be recognised as done`);
      }
      return;
    }
    settle(message, disposition, this.options.logger);
  }
}

/** How long one ack waits for the broker's answer before it is sent again. */
const ACK_CONFIRM_TIMEOUT_MS = 2_000;
/** Between acks that had no answer: 500 ms, 1 s, 1.5 s... within the ack wait. */
const ACK_RETRY_DELAY_MS = 500;
/** The ack protocol message (what JsMsg.ack() sends). */
const ACK_PAYLOAD = '+ACK';

function settle(message: JsMsg, disposition: Disposition, logger: Logger): void {
  try {
    if (disposition.kind === 'ack') message.ack();
    else if (disposition.kind === 'nak') message.nak(disposition.delayMs);
    // No reason argument: nats-server 2.9 ignores `+TERM <reason>` and would redeliver the message.
    else message.term();
  } catch (error) {
    // The connection is closing: the broker redelivers after the ack wait.
    logger.warn(`could not settle ${message.subject} #${message.seq}: ${errorMessage(error)}`);
  }
}

/**
 * Acks `message` and waits for the broker to confirm it, asking again until the ack wait is over.
 * On a cluster whose consumer leader just died, an ack has no one to take it until a new leader
 * is elected (about 7 s on loopback): one unconfirmed ack meant a redelivery after the ack wait,
 * and for the dumper a second dump of the same trigger. The broker answers a repeated ack too,
 * so a retry after an ack that did land but whose answer was lost is harmless. Once the app is
 * stopping (`stopping` aborted) or the connection is closed, no more tries: a stop must not wait out
 * the ack wait, and a redelivery is recognised as done.
 */
export async function confirmAck(connection: NatsConnection, message: JsMsg, ackWaitMs: number, logger: Logger, stopping?: AbortSignal): Promise<boolean> {
  const deadline = Date.now() + ackWaitMs;
  const timeout = () => Math.max(100, Math.min(ACK_CONFIRM_TIMEOUT_MS, deadline - Date.now()));
  if (await message.ackAck({ timeout: timeout() }).catch(() => false)) return true;
  // ackAck() answers only once per message: ask again on the message's ack subject (its reply
  // subject, which the client's JsMsg implementation exposes but its interface does not name).
  const ackSubject = (message as Partial<{ reply: unknown }>).reply;
  if (typeof ackSubject !== 'string' || !ackSubject) return false;
  for (let attempt = 1; Date.now() < deadline; attempt++) {
    await sleep(Math.min(ACK_RETRY_DELAY_MS * attempt, Math.max(0, deadline - Date.now())), undefined, { signal: stopping }).catch(() => undefined);
    if (Date.now() >= deadline || stopping?.aborted || connection.isClosed()) break;
    const confirmed = await connection
      .request(ackSubject, ACK_PAYLOAD, { timeout: timeout() })
      .then(() => true)
      .catch(() => false);
    if (confirmed) {
      logger.log(`ack of ${message.subject} #${message.seq} confirmed on attempt ${attempt + 1}`);
      return true;
    }
  }
  return false;
}
