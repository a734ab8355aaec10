import type { LoggerService } from '@nestjs/common';
import { redactSecrets } from './redact';
import { currentLogContext } from './log-context';

type Level = 'fatal' | 'error' | 'warn' | 'log' | 'debug' | 'verbose';

/**
 * LOG_FORMAT=json: one JSON object per line (time, level, app, context, message, and the fields of
 * the current unit of work such as snapshotId and environment), secrets masked, for log shippers.
 */
export class JsonLogger implements LoggerService {
  constructor(
    private readonly app: string,
    private readonly write: (line: string) => void = (line) => process.stdout.write(line),
  ) {}

  // Nest calls these six levels; each only names its level.
  readonly log = this.at('log');
  readonly error = this.at('error');
  readonly warn = this.at('warn');
  readonly debug = this.at('debug');
  readonly verbose = this.at('verbose');
  readonly fatal = this.at('fatal');

  private at(level: Level): (message: unknown, ...params: unknown[]) => void {
    return (message, ...params) => this.print(level, message, params);
  }

  private print(level: Level, message: unknown, params: unknown[]): void {
    // Nest passes the context last; an error's stack comes before it.
    const context = typeof params[params.length - 1] === 'string' ? (params.pop() as string) : undefined;
    const stack = typeof params[0] === 'string' && params[0].includes('\n    at ') ? (params.shift() as string) : undefined;
    const text = message instanceof Error ? message.message : typeof message === 'string' ? message : JSON.stringify(message);
    const line = {
      time: new Date().toISOString(),
      level,
      app: this.app,
      context,
      message: redactSecrets(text ?? ''),
      ...currentLogContext(),
      ...(stack || message instanceof Error ? { stack: redactSecrets(stack ?? (message as Error).stack ?? '') } : {}),
    };
    this.write(`${JSON.stringify(line)}\n`);
  }
}
