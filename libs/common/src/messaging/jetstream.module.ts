import { DynamicModule, Global, Inject, Injectable, Logger, Module, OnApplicationShutdown } from '@nestjs/common';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { NatsConfig } from '../config/app-config';
import { HealthController } from '../observability/health.controller';
import { MetricsController } from '../observability/metrics.controller';
import { MetricsService } from '../observability/metrics.service';
import { ReadinessService } from '../observability/readiness.service';
import { EventPublisher } from './event-publisher';
import { JETSTREAM_BINDINGS, NATS_CONFIG, NATS_CONNECTION } from './jetstream.constants';
import { JetStreamServer } from './jetstream.server';
import { openNatsConnection } from './nats-connection';
import { type ConsumerBinding, ensureStream } from './stream-setup';

/** The stream exists before anything publishes or consumes: a publisher-only app needs it too. */
async function connectAndEnsureStream(config: NatsConfig, clientName: string): Promise<NatsConnection> {
  const connection = await openNatsConnection(config, clientName);
  try {
    await ensureStream(await jetstreamManager(connection), config);
  } catch (error) {
    await connection.close();
    throw new Error(`cannot set up JetStream stream ${config.stream}: ${(error as Error).message}`, { cause: error });
  }
  return connection;
}

/** Drains the connection last, after the transport has finished its in-flight messages. */
@Injectable()
class NatsConnectionCloser implements OnApplicationShutdown {
  private readonly logger = new Logger('NATS');

  constructor(@Inject(NATS_CONNECTION) private readonly connection: NatsConnection) {}

  async onApplicationShutdown(): Promise<void> {
    if (this.connection.isClosed()) return;
    await this.connection.drain().catch((error: unknown) => this.logger.warn(`drain failed: ${String(error)}`));
    await this.connection.closed();
  }
}

export interface JetStreamModuleOptions {
  config: NatsConfig;
  /** Shown in the server's connection list (`nats server report connections`). */
  clientName: string;
  bindings: ConsumerBinding[];
}

/** The NATS connection, the event publisher, the JetStream transport, /health and /metrics, for one app. */
@Global()
@Module({})
export class JetStreamModule {
  static forRoot(options: JetStreamModuleOptions): DynamicModule {
    return {
      module: JetStreamModule,
      controllers: [HealthController, MetricsController],
      providers: [
        { provide: NATS_CONFIG, useValue: options.config },
        { provide: JETSTREAM_BINDINGS, useValue: options.bindings },
        { provide: NATS_CONNECTION, useFactory: () => connectAndEnsureStream(options.config, options.clientName) },
        NatsConnectionCloser,
        ReadinessService,
        MetricsService,
        EventPublisher,
        JetStreamServer,
      ],
      exports: [NATS_CONFIG, NATS_CONNECTION, ReadinessService, MetricsService, EventPublisher, JetStreamServer],
    };
  }
}
