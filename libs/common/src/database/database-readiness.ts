import { Logger, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import { errorMessage } from '../observability/redact';
import type { ReadinessService } from '../observability/readiness.service';
import { createPostgresPool } from './postgres-pool';

const PROBE_INTERVAL_MS = 5_000;
const PROBE_TIMEOUT_MS = 3_000;

/** Anything that can run `SELECT 1`: the app's own `pg.Pool` (a probe then costs no new connection). */
export interface ProbeTarget {
  query(sql: string): Promise<unknown>;
}

/**
 * Keeps a readiness check for a database the app depends on: /health turns 503 while it cannot be
 * reached, and 200 again when it comes back. The app itself stays up and keeps its messages.
 *
 * Give it the app's pool: the probe borrows an idle connection instead of opening one every 5 s.
 * A URL still works (a one-connection pool of its own, with the same pinned session settings).
 */
export class DatabaseReadiness implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger('Health');
  private readonly target: ProbeTarget;
  private readonly ownPool?: { end(): Promise<void> };
  private timer?: NodeJS.Timeout;
  private reachable?: boolean;

  constructor(
    private readonly readiness: ReadinessService,
    private readonly check: string,
    target: ProbeTarget | string,
  ) {
    if (typeof target === 'string') {
      const pool = createPostgresPool(target, { applicationName: 'db-fanout-health', lockTimeoutMs: PROBE_TIMEOUT_MS, max: 1, connectionTimeoutMillis: PROBE_TIMEOUT_MS });
      this.target = pool;
      this.ownPool = pool;
    } else {
      this.target = target;
    }
  }

  async onApplicationBootstrap(): Promise<void> {
    await this.probe();
    this.timer = setInterval(() => void this.probe(), PROBE_INTERVAL_MS);
    this.timer.unref();
  }

  async onApplicationShutdown(): Promise<void> {
    clearInterval(this.timer);
    await this.ownPool?.end().catch(() => undefined);
  }

  /** One probe now; exposed for tests. */
  async probe(): Promise<void> {
    let timeout: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.target.query('SELECT 1'),
        new Promise((_, reject) => {
          timeout = setTimeout(() => reject(new Error(`no answer within ${PROBE_TIMEOUT_MS} ms`)), PROBE_TIMEOUT_MS);
        }),
      ]);
      this.record(true, 'reachable');
    } catch (error) {
      this.record(false, errorMessage(error));
    } finally {
      clearTimeout(timeout);
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
