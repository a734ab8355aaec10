import { ConsoleLogger, type LoggerService, type LogLevel } from '@nestjs/common';
import type { LogFormat } from '../config/app-config';
import { JsonLogger } from './json-logger';
import { redactSecrets } from './redact';

/**
 * LOG_FORMAT=text: Nest's own readable lines, with every message and stack masked as the JSON lines
 * are (a driver's error can quote a connection string that no call site thought to mask).
 */
export class TextLogger extends ConsoleLogger {
  protected override stringifyMessage(message: unknown, logLevel: LogLevel): string {
    return redactSecrets(super.stringifyMessage(message, logLevel));
  }

  /** Nest calls this for every error line, with `undefined` when the line has no stack. */
  protected override printStackTrace(stack: string | undefined): void {
    super.printStackTrace(typeof stack === 'string' ? redactSecrets(stack) : (stack as unknown as string));
  }
}

/**
 * The logger of one app, set before the app is created so that boot errors are formatted too.
 * nestjs-pino is not used: its releases for NestJS 12 need Node 22.12, and this project runs on 20.
 */
export function createAppLogger(app: string, format: LogFormat): LoggerService {
  return format === 'json' ? new JsonLogger(app) : new TextLogger();
}
