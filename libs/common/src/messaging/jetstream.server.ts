import { BeforeApplicationShutdown, Inject, Injectable, Logger } from '@nestjs/common';
import { CustomTransportStrategy, Server } from '@nestjs/microservices';
import { jetstream, jetstreamManager, type JsMsg } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { lastValueFrom } from 'rxjs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { NatsConfig } from '../config/app-config';
import { ReadinessService } from '../observability/readiness.service';
import { withLogContext } from '../observability/log-context';
import { errorMessage } from '../observability/redact';
import { JETSTREAM_BINDINGS, NATS_CONFIG, NATS_CONNECTION } from './jetstream.constants';
import { JetStreamContext } from './jetstream.context';
import { isTerminateDisposition } from './message-disposition';
import { type ConsumerBinding, ensureConsumer } from './stream-setup';

const PULL_EXPIRES_MS = 5_000;
const MAX_REDELIVERY_DELAY_MS = 5_000;

/**
 * A Nest transport over JetStream pull consumers, so handlers stay plain @EventPattern methods while
 * delivery is at-least-once: a message is acked only after its handler's work has completed, kept
 * alive with `working()` while it runs, naked on unexpected errors, and terminated when the handler
 * says it can never succeed.
 */
@Injectable()
export class JetStreamServer extends Server implements CustomTransportStrategy, BeforeApplicationShutdown {
  protected override readonly logger = new Logger('JetStream');
  private stopping = false;
  private readonly stopSignal = new AbortController();
  private loops: Promise<void>[] = [];
  /** The broker's ack wait per consumer, which may differ from ACK_WAIT for an existing consumer. */
  private readonly ackWaitMs = new Map<string, number>();

  constructor(
    @Inject(NATS_CONNECTION) private readonly connection: NatsConnection,
    @Inject(NATS_CONFIG) private readonly config: NatsConfig,
    @Inject(JETSTREAM_BINDINGS) private readonly bindings: ConsumerBinding[],
    private readonly readiness: ReadinessService,
  ) {
    super();
  }

  listen(callback: (error?: unknown) => void): void {
    this.start().then(
      () => callback(),
      (error: unknown) => callback(error),
    );
  }

  private async start(): Promise<void> {
    this.readiness.set('nats', false, 'starting');
    const jsm = await jetstreamManager(this.connection);
    for (const binding of this.bindings) {
      if (!this.getHandlerByPattern(binding.pattern)) {
        throw new Error(`no @EventPattern('${binding.pattern}') handler is registered for consumer ${binding.durable}`);
      }
      const ackWaitMs = await ensureConsumer(jsm, this.config, binding);
      this.ackWaitMs.set(binding.durable, ackWaitMs);
      if (ackWaitMs !== this.config.ackWaitMs) {
        this.logger.warn(`consumer ${binding.durable} keeps its ack wait of ${ackWaitMs}ms (ACK_WAIT asks ${this.config.ackWaitMs}ms); heartbeats follow the consumer`);
      }
    }
    this.loops = this.bindings.map((binding) => this.consumeLoop(binding));
    this.readiness.set('nats', true, `consuming ${this.bindings.map((b) => b.durable).join(', ')}`);
    void this.watchConnection();
  }

  /** Health follows the connection: a broker restart makes the app not-ready until it reconnects. */
  private async watchConnection(): Promise<void> {
    for await (const status of this.connection.status()) {
      if (status.type === 'disconnect') {
        this.readiness.set('nats', false, 'disconnected from NATS');
        this.logger.warn('disconnected from NATS, reconnecting');
      } else if (status.type === 'reconnect') {
        this.readiness.set('nats', !this.stopping, `reconnected to ${status.server}`);
        this.logger.log(`reconnected to NATS at ${status.server}`);
      }
    }
  }

  private async consumeLoop(binding: ConsumerBinding): Promise<void> {
    const js = jetstream(this.connection);
    while (!this.stopping) {
      let message: JsMsg | null;
      try {
        const consumer = await js.consumers.get(this.config.stream, binding.durable);
        message = await consumer.next({ expires: PULL_EXPIRES_MS });
      } catch (error) {
        if (this.stopping) break;
        this.logger.warn(`pull from ${binding.durable} failed, retrying: ${errorMessage(error)}`);
        await this.pause(1_000);
        await this.recreateConsumerIfMissing(binding);
        continue;
      }
      if (!message) continue;
      if (this.stopping) {
        message.nak(); // fetched while shutting down: hand it back untouched
        break;
      }
      await this.process(binding, message);
    }
  }

  private async recreateConsumerIfMissing(binding: ConsumerBinding): Promise<void> {
    try {
      await ensureConsumer(await jetstreamManager(this.connection), this.config, binding);
    } catch {
      // The broker is still away; the next pull will tell.
    }
  }

  private async process(binding: ConsumerBinding, message: JsMsg): Promise<void> {
    const where = `${binding.pattern} #${message.seq} (delivery ${message.info.deliveryCount}, consumer ${binding.durable})`;
    let body: unknown;
    try {
      const text = message.string();
      body = text.trim() === '' ? {} : JSON.parse(text);
    } catch {
      this.logger.warn(`rejected ${where}: body is not JSON`);
      message.term();
      return;
    }

    // Keep the message ours while the handler runs (a load can outlast the ack wait many times).
    const ackWaitMs = this.ackWaitMs.get(binding.durable) ?? this.config.ackWaitMs;
    const heartbeat = setInterval(() => message.working(), Math.max(200, Math.floor(ackWaitMs / 3)));
    try {
      const handler = this.getHandlerByPattern(binding.pattern)!;
      const context = new JetStreamContext([message, binding.pattern, this.stopSignal.signal, binding.maxDeliver]);
      // Every log line of this message's work says which message it was.
      await withLogContext({ subject: binding.pattern, seq: message.seq }, async (): Promise<void> => {
        await lastValueFrom(this.transformToObservable(await handler(body, context)), { defaultValue: undefined });
      });
      clearInterval(heartbeat);
      if (!(await message.ackAck().catch(() => false))) {
        this.logger.warn(`ack of ${where} was not confirmed; a redelivery will be recognised as done`);
      }
    } catch (error) {
      clearInterval(heartbeat);
      if (isTerminateDisposition(error)) {
        this.logger.warn(`rejected ${where}: ${error.reason}`);
        // No reason argument: nats-server 2.9 ignores `+TERM <reason>` and would redeliver the message.
        message.term();
      } else {
        this.logger.error(`handler failed for ${where}, will be redelivered: ${describeError(error)}`);
        message.nak(Math.min(MAX_REDELIVERY_DELAY_MS, ackWaitMs));
      }
    }
  }

  private async pause(ms: number): Promise<void> {
    await sleep(ms, undefined, { signal: this.stopSignal.signal }).catch(() => undefined);
  }

  /** Runs before providers are destroyed: stop pulling, let in-flight work finish (or roll back). */
  async beforeApplicationShutdown(): Promise<void> {
    await this.close();
  }

  async close(): Promise<void> {
    if (this.stopping) {
      await Promise.allSettled(this.loops);
      return;
    }
    this.stopping = true;
    this.stopSignal.abort();
    this.readiness.set('nats', false, 'shutting down');
    await Promise.allSettled(this.loops);
  }

  on(): never {
    throw new Error('JetStreamServer does not emit events');
  }

  unwrap<T>(): T {
    return this.connection as T;
  }
}

function describeError(error: unknown): string {
  if (error instanceof Error) return errorMessage(error);
  if (typeof error === 'object' && error !== null && 'message' in error) return String(error.message);
  return String(error);
}
