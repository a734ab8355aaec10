import { BeforeApplicationShutdown, Inject, Injectable, Logger } from '@nestjs/common';
import { CustomTransportStrategy, Server } from '@nestjs/microservices';
import { jetstreamManager, type JsMsg } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { lastValueFrom } from 'rxjs';
import type { NatsConfig } from '../config/app-config';
import { ReadinessService } from '../observability/readiness.service';
import { withLogContext } from '../observability/log-context';
import { errorMessage } from '../observability/redact';
import { JETSTREAM_BINDINGS, NATS_CONFIG, NATS_CONNECTION } from './jetstream.constants';
import { JetStreamContext } from './jetstream.context';
import { isRedeliverDisposition, isTerminateDisposition } from './message-disposition';
import { ACK, type ConsumerSettings, type Disposition, isLastDeliveryOf, nak, PullConsumer, TERM } from './pull-consumer';
import { type ConsumerBinding, ensureConsumer } from './stream-setup';

const PULL_EXPIRES_MS = 5_000;
const MAX_REDELIVERY_DELAY_MS = 5_000;

/**
 * A Nest transport over JetStream pull consumers, so handlers stay plain @EventPattern methods while
 * delivery is at-least-once: a message is acked only after its handler's work has completed, kept
 * alive with `working()` while it runs, naked on unexpected errors, and terminated when the handler
 * says it can never succeed, or when it fails on the message's last delivery (the broker would drop
 * it anyway: the log says so, not that it will be redelivered). The pulling itself is {@link PullConsumer}'s.
 */
@Injectable()
export class JetStreamServer extends Server implements CustomTransportStrategy, BeforeApplicationShutdown {
  protected override readonly logger = new Logger('JetStream');
  private stopping = false;
  private readonly stopSignal = new AbortController();
  private loops: Promise<void>[] = [];

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
    const consumers: { binding: ConsumerBinding; consumer: PullConsumer }[] = [];
    for (const binding of this.bindings) {
      if (!this.getHandlerByPattern(binding.pattern)) {
        throw new Error(`no @EventPattern('${binding.pattern}') handler is registered for consumer ${binding.durable}`);
      }
      // Compared in full and brought in line here, so a consumer the app cannot use stops the boot.
      await ensureConsumer(jsm, this.config, binding);
      const consumer = new PullConsumer({
        connection: this.connection,
        stream: this.config.stream,
        name: binding.durable,
        ensure: async () => ensureConsumer(await jetstreamManager(this.connection), this.config, binding),
        logger: this.logger,
        expiresMs: PULL_EXPIRES_MS,
      });
      consumers.push({ binding, consumer });
    }
    this.loops = consumers.map(({ binding, consumer }) => consumer.run((message, settings) => this.process(binding, message, settings), this.stopSignal.signal));
    // A publisher (the scheduler) binds no consumer: said so, not an empty list.
    const detail = this.bindings.length ? `consuming ${this.bindings.map((b) => b.durable).join(', ')}` : `connected to NATS at ${this.connection.getServer()}, no consumers bound`;
    this.readiness.set('nats', true, detail);
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

  /** One message through its @EventPattern handler; the returned disposition settles it. */
  private async process(binding: ConsumerBinding, message: JsMsg, settings: ConsumerSettings): Promise<Disposition> {
    const where = `${binding.pattern} #${message.seq} (delivery ${message.info.deliveryCount}, consumer ${binding.durable})`;
    let body: unknown;
    try {
      const text = message.string();
      body = text.trim() === '' ? {} : JSON.parse(text);
    } catch {
      this.logger.warn(`rejected ${where}: body is not JSON`);
      return TERM;
    }
    try {
      const handler = this.getHandlerByPattern(binding.pattern)!;
      const context = new JetStreamContext([message, binding.pattern, this.stopSignal.signal, settings.maxDeliver]);
      // Every log line of this message's work says which message it was.
      await withLogContext({ subject: binding.pattern, seq: message.seq }, async (): Promise<void> => {
        await lastValueFrom(this.transformToObservable(await handler(body, context)), { defaultValue: undefined });
      });
      return ACK;
    } catch (error) {
      if (isTerminateDisposition(error)) {
        this.logger.warn(`rejected ${where}: ${error.reason}`);
        return TERM;
      }
      const reason = isRedeliverDisposition(error) ? error.reason : describeError(error);
      if (isLastDeliveryOf(message, settings)) {
        // Handed back, it would not come again: the broker drops a message past max_deliver, after the
        // nak's delay, with an advisory only. Said as it is, and terminated (nothing left to wait for).
        this.logger.error(
          `dropped ${binding.pattern} #${message.seq} (consumer ${binding.durable}) after its last delivery ${message.info.deliveryCount}/${settings.maxDeliver} with no outcome published: the handler failed: ${reason}`,
        );
        return TERM;
      }
      this.logger.error(`handler failed for ${where}, will be redelivered: ${reason}`);
      return nak(Math.min(MAX_REDELIVERY_DELAY_MS, settings.ackWaitMs));
    }
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
