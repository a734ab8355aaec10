import type { OnApplicationShutdown } from '@nestjs/common';
import type { Pool, PoolClient } from 'pg';
import { createPostgresPool, DUMP_SOURCE_SETTINGS } from '@app/common/database';

/**
 * How long a dump session waits for a table lock in production before giving up (SQLSTATE 55P03,
 * retried as transient), like pg_dump's --lock-wait-timeout.
 */
export const DUMP_LOCK_TIMEOUT_MS = 60_000;

/** Where a dump gets its sessions: the source database, or a test's wrapper around it. */
export interface DumpSessionSource {
  connect(): Promise<PoolClient>;
}

/**
 * The production database as the dumper sees it: one pool, the only place the dumper opens
 * connections. Every session is pinned (libs/common createPostgresPool) and runs with
 * `row_security = off`, so a role that row-level security would filter fails loudly instead of
 * dumping a silent subset (as pg_dump does).
 */
export class SourceDatabase implements DumpSessionSource, OnApplicationShutdown {
  private readonly pool: Pool;

  /**
   * `jobs`: DUMP_JOBS sessions at once, one that watches production's lock waits during a dump
   * (libs/common/src/database/lock-watch.ts), and one spare (a retry may connect before the pool dropped a broken one).
   */
  constructor(url: string, jobs = 1) {
    this.pool = createPostgresPool(url, {
      applicationName: 'db-fanout-dumper',
      lockTimeoutMs: DUMP_LOCK_TIMEOUT_MS,
      settings: DUMP_SOURCE_SETTINGS,
      max: jobs + 2,
    });
  }

  connect(): Promise<PoolClient> {
    return this.pool.connect();
  }

  /** One statement on an idle session of the pool (readiness probes: no connection of their own). */
  async query(sql: string): Promise<unknown> {
    return this.pool.query(sql);
  }

  async end(): Promise<void> {
    await this.pool.end();
  }

  async onApplicationShutdown(): Promise<void> {
    await this.end();
  }
}
