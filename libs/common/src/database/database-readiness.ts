import { Logger, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import { Client } from 'pg';
import { errorMessage } from '../observability/redact';
import type { ReadinessService } from '../observability/readiness.service';

const PROBE_INTERVAL_MS = 5_000;
const PROBE_TIMEOUT_MS = 3_000;

/**
 * Keeps a readiness check for a database the app depends on: /health turns 503 while it cannot be
 * reached, and 200 again when it comes back. The app itself stays up and keeps its messages.
 */
export class DatabaseReadiness implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger('Health');
  private timer?: NodeJS.Timeout;
  private reachable?: boolean;

  constructor(
    private readonly readiness: ReadinessService,
    private readonly check: string,
    private readonly url: string,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    await this.probe();
    this.timer = setInterval(() => void this.probe(), PROBE_INTERVAL_MS);
    this.timer.unref();
  }

  onApplicationShutdown(): void {
    clearInterval(this.timer);
  }

  private async probe(): Promise<void> {
    const client = new Client({ connectionString: this.url, connectionTimeoutMillis: PROBE_TIMEOUT_MS, application_name: 'db-fanout-health' });
    client.on('error', () => undefined);
    try {
      await client.connect();
      await client.query('SELECT 1');
      this.record(true, 'reachable');
    } catch (error) {
      this.record(false, errorMessage(error));
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  private record(ok: boolean, detail: string): void {
    if (ok !== this.reachable) {
      if (ok) this.logger.log(`${this.check} is reachable`);
      else this.logger.warn(`${this.check} is unreachable: ${detail}`);
    }
    this.reachable = ok;
    this.readiness.set(this.check, ok, detail);
  }
}
