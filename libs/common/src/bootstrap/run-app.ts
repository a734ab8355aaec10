import { type DynamicModule, type INestApplication, Logger, type LoggerService } from '@nestjs/common';
import { HttpAdapterHost, NestFactory } from '@nestjs/core';
import type { MicroserviceOptions } from '@nestjs/microservices';
import type { HttpConfig, LogFormat } from '../config/app-config';
import { ConfigError } from '../config/env-reader';
import { HttpTokenGuard } from '../observability/http-token.guard';
import { JetStreamServer } from '../messaging/jetstream.server';
import { TerminateMessageFilter } from '../messaging/terminate-message.filter';
import { createAppLogger } from '../observability/logging';
import { errorMessage } from '../observability/redact';

export interface AppDefinition<C extends { http: HttpConfig; logFormat: LogFormat }> {
  name: string;
  loadConfig: () => C;
  module: (config: C) => DynamicModule;
  logger?: LoggerService;
}

/** Makes the app's @EventPattern handlers consume from JetStream (JetStreamModule must be imported). */
export function attachJetStream(app: INestApplication): void {
  app.useGlobalFilters(new TerminateMessageFilter(app.get(HttpAdapterHost).httpAdapter));
  app.connectMicroservice<MicroserviceOptions>({ strategy: app.get(JetStreamServer) }, { inheritAppConfig: true });
}

/**
 * Boots one app: validate the environment (one line and exit 1 when it is wrong), connect to NATS,
 * start consuming, serve /health. Anything that fails at boot exits non-zero, loudly.
 */
export async function runApp<C extends { http: HttpConfig; logFormat: LogFormat }>(definition: AppDefinition<C>): Promise<void> {
  const logger = new Logger(definition.name);
  let config: C;
  try {
    config = definition.loadConfig();
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`${definition.name}: ${error.message}\n`);
    process.exit(1);
  }
  try {
    const appLogger = definition.logger ?? createAppLogger(definition.name, config.logFormat);
    Logger.overrideLogger(appLogger);
    const app = await NestFactory.create(definition.module(config), { logger: appLogger, abortOnError: false });
    app.useGlobalGuards(new HttpTokenGuard(config.http));
    attachJetStream(app);
    await app.startAllMicroservices();
    // The lifecycle hooks (a loader's SNAPSHOT_DIR or S3 bucket check, a KV bucket the broker
    // refuses) run here, not inside listen(): their errors are not about serving /health and must not
    // be named as such.
    await app.init();
    await app.listen(config.http.port, config.http.host).catch((error: unknown) => {
      // EADDRINUSE, ENOTFOUND: named by the variables that chose them.
      throw new Error(`cannot serve /health on HTTP_HOST ${config.http.host} HTTP_PORT ${config.http.port}: ${errorMessage(error)}`, { cause: error });
    });
    logger.log(`${definition.name} ready; /health on ${config.http.host}:${config.http.port}`);
    exitCleanlyOn(['SIGTERM', 'SIGINT'], () => app.close(), logger);
  } catch (error) {
    logger.error(`${definition.name} failed to start: ${errorMessage(error)}`);
    process.exit(1);
  }
}

/**
 * Nest's enableShutdownHooks re-raises the signal after closing, so even a clean drain ends as
 * "killed by SIGTERM". Here a drained shutdown exits 0, and a second signal forces the exit.
 */
function exitCleanlyOn(signals: NodeJS.Signals[], close: () => Promise<void>, logger: Logger): void {
  let closing = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (closing) {
      logger.warn(`${signal} again: exiting without waiting for in-flight work`);
      process.exit(1);
    }
    closing = true;
    logger.log(`${signal}: finishing in-flight work, then exiting`);
    close().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error(`shutdown failed: ${errorMessage(error)}`);
        process.exit(1);
      },
    );
  };
  for (const signal of signals) process.on(signal, onSignal);
}
