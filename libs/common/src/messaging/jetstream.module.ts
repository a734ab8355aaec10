import { setTimeout as sleep } from 'node:timers/promises';
import { DynamicModule, Global, Inject, Injectable, Logger, Module, OnApplicationShutdown } from '@nestjs/common';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { NatsConfig } from '../config/app-config';
import { EventPublisher } from './event-publisher';
import { JETSTREAM_BINDINGS, NATS_CONFIG, NATS_CONNECTION } from './jetstream.constants';
import { JetStreamServer } from './jetstream.server';
import { openNatsConnection } from './nats-connection';
import { type ConsumerBinding, ensureStream } from './stream-setup';

/** The stream exists before anything publishes or consumes: a publisher-only app needs it too. */
async function connectAndEnsureStream(config: NatsConfig, clientName: string): Promise<NatsConnection> {
  const connection = await openNatsConnection(config, clientName);
  try {
    await ensureStream(await jetstreamManager(connection), config, (message) => new Logger('JetStream').warn(message));
  } catch (error) {
    await connection.close();
    throw new Error(`cannot set up JetStream stream ${config.stream}: ${(error as Error).message}`, { cause: error });
  }
  return connection;
}

/** The longest a shutdown waits for the drain (pending publishes flushed) before closing. */
const DRAIN_TIMEOUT_MS = 10_000;

/** Drains the connection last, after the transport has finished its in-flight messages. */
@Injectable()
class NatsConnectionCloser implements OnApplicationShutdown {
  private readonly logger = new Logger('NATS');

  constructor(@Inject(NATS_CONNECTION) private readonly connection: NatsConnection) {}

  async onApplicationShutdown(): Promise<void> {
    if (this.connection.isClosed()) return;
    // A drain that fails (NATS unreachable) or does not end leaves a connection that reconnects for
    // ever: waiting on closed() then never returned, and the app never exited. It is closed instead.
    const drained = await Promise.race([
      this.connection.drain().then(
        () => true,
        (error: unknown) => {
          this.logger.warn(`drain failed, closing: ${String(error)}`);
          return false;
        },
      ),
      sleep(DRAIN_TIMEOUT_MS, false, { ref: false }),
    ]);
    if (!drained) await this.connection.close().catch(() => undefined);
    await this.connection.closed();
  }
}

export interface JetStreamModuleOptions {
  config: NatsConfig;
  /** Shown in the server's connection list (`nats server report connections`). */
  clientName: string;
  bindings: ConsumerBinding[];
}

/**
 * Messaging for one app: the NATS connection, the event publisher and the JetStream transport. It
 * reports readiness through ObservabilityModule, which the app imports beside it.
 */
@Global()
@Module({})
export class JetStreamModule {
  static forRoot(options: JetStreamModuleOptions): DynamicModule {
    return {
      module: JetStreamModule,
      providers: [
        { provide: NATS_CONFIG, useValue: options.config },
        { provide: JETSTREAM_BINDINGS, useValue: options.bindings },
        { provide: NATS_CONNECTION, useFactory: () => connectAndEnsureStream(options.config, options.clientName) },
        NatsConnectionCloser,
        EventPublisher,
        JetStreamServer,
      ],
      exports: [NATS_CONFIG, NATS_CONNECTION, EventPublisher, JetStreamServer],
    };
  }
}
