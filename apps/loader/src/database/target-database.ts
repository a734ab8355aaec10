import { setTimeout as sleep } from 'node:timers/promises';
import { Logger, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import type { Pool } from 'pg';
import { createPostgresPool, parseQualifiedName, quoteQualified, serverIdentity, type ServerIdentity, unpinnedSessionSettings } from '@app/common/database';
import { errorMessage } from '@app/common/observability';
import { type LedgerEntry, LedgerRepository } from '../ledger';
import { TargetLoad } from '../load/target-load';

/**
 * Every target session gives up waiting for a lock after this long (lock_not_available, retried); a
 * load's waits for the ledger's lock (unbounded) and its tables' locks (bounded by it) are sliced.
 */
export const TARGET_LOCK_TIMEOUT_MS = 60_000;

/** How often a stop's cancel of the post-load ANALYZE is sent again while the statement goes on. */
const CANCEL_REPEAT_MS = 250;

/**
 * The environment's database: the loader's one `pg.Pool` (created through createPostgresPool, so
 * every session has the pinned settings, lock_timeout and keepalive) and the only code in the loader
 * that reaches PostgreSQL. A load borrows one client for its whole transaction (`begin`); ANALYZE,
 * marking an announcement and the readiness probe use the pool.
 */
export class TargetDatabase implements OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger('TargetDatabase');
  readonly pool: Pool;
  private readonly ledger: LedgerRepository;
  private migrated?: Promise<void>;
  /** The environment's own settings as the last load read them (ownSettings). */
  private lastOwnSettings?: Record<string, string>;

  /** `lockTimeoutMs`: TARGET_LOCK_TIMEOUT_MS unless given (tests shorten it). */
  constructor(
    private readonly url: string,
    { lockTimeoutMs = TARGET_LOCK_TIMEOUT_MS }: { lockTimeoutMs?: number } = {},
  ) {
    this.pool = createPostgresPool(url, { applicationName: 'db-fanout-loader', lockTimeoutMs, max: 4 });
    this.ledger = new LedgerRepository(this.pool);
  }

  /**
   * Upgrades an existing ledger at startup; a target that is down then is migrated before the first
   * load. A target without a ledger is not written to until a load has checked that it is not the
   * snapshot's own source (a loader pointed at production must not create a schema there).
   */
  async onModuleInit(): Promise<void> {
    await this.existingLedger().catch((error: unknown) => this.logger.warn(`could not prepare the ledger yet (retried before the first load): ${errorMessage(error)}`));
  }

  async onApplicationShutdown(): Promise<void> {
    await this.close();
  }

  async close(): Promise<void> {
    await this.pool.end().catch(() => undefined);
  }

  /** The ledger's schema, once per process; a failed attempt is tried again by the next caller. */
  ensureLedger(): Promise<void> {
    this.migrated ??= this.ledger.migrate().catch((error: unknown) => {
      this.migrated = undefined;
      throw error;
    });
    return this.migrated;
  }

  /**
   * Whether the target has a ledger, upgraded if it has one; nothing is created. The reads before a
   * load (metrics at startup, a redelivery's early check) use it: no ledger means no load yet.
   */
  private async existingLedger(): Promise<boolean> {
    if (!(await this.ledger.exists())) {
      // Dropped since it was made (the environment restored, or rebuilt): made again by the next load.
      this.migrated = undefined;
      return false;
    }
    await this.ensureLedger();
    return true;
  }

  /** Which cluster and database the pool reaches: a load refuses its own source before writing anything. */
  async identity(): Promise<ServerIdentity> {
    const client = await this.pool.connect();
    try {
      return await serverIdentity(client);
    } finally {
      client.release();
    }
  }

  /**
   * The environment's own values of `names`, as a plain session of the loader's role has them (see
   * unpinnedSessionSettings), read on one more connection. At the role's or the server's connection
   * limit (SQLSTATE class 53: a role limited to the pool's size, a pooler's per-user cap) that
   * connection is refused: the load then computes with the values an earlier load read, or, before
   * any, with the pinned ones, and `log` says so; refusing the load would fail it at every retry.
   */
  async ownSettings(names: readonly string[], log?: (line: string) => void): Promise<Record<string, string>> {
    try {
      this.lastOwnSettings = await unpinnedSessionSettings(this.url, names, 'db-fanout-loader');
      return this.lastOwnSettings;
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if (typeof code !== 'string' || !code.startsWith('53')) throw error;
      const instead = this.lastOwnSettings ? 'the values an earlier load read' : "the loader's pinned ones (TimeZone UTC, DateStyle ISO)";
      log?.(`could not open a connection to read the environment's own ${names.join(', ')} (${errorMessage(error)}): computing with ${instead}`);
      return this.lastOwnSettings ?? {};
    }
  }

  /**
   * Starts a load: one client from the pool, held from BEGIN to COMMIT or ROLLBACK. Creates the
   * ledger if missing, so call it only after `identity()` has been checked.
   */
  async begin(): Promise<TargetLoad> {
    // Checked at every load, not once per process: after the environment was restored or rebuilt
    // without db_fanout, every load failed on the missing table (42P01, permanent) until a restart.
    if (this.migrated && !(await this.ledger.exists())) this.migrated = undefined;
    await this.ensureLedger();
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
    } catch (error) {
      client.release(error as Error);
      throw error;
    }
    return new TargetLoad(client);
  }

  /**
   * Fresh planner statistics for the loaded tables. Run after the load is committed and announced:
   * the environment is usable without it, and a failure here costs query plans, never data.
   * `signal`: the app stopping. ANALYZE then does not start, and one under way is cancelled: it can
   * wait up to the session's lock_timeout (60 s) behind a VACUUM or a CREATE INDEX CONCURRENTLY, past
   * the orchestrator's grace period, for statistics autovacuum gathers anyway. Resolves `false`
   * when the stop ended it, `true` when it ran.
   */
  async analyze(tableNames: string[], signal?: AbortSignal): Promise<boolean> {
    // A bare ANALYZE would go through the whole database.
    if (!tableNames.length) return true;
    if (signal?.aborted) return false;
    const client = await this.pool.connect();
    // The client's backend, cancelled from another session (node-postgres has no cancel of its own).
    // A cancel that arrives before the backend starts the statement is ignored, so it is sent again
    // every CANCEL_REPEAT_MS until the statement ends, and the client goes back to the pool only
    // once no cancel can reach it.
    const backend = (client as unknown as { processID: number }).processID;
    let settled = false;
    const cancel = async () => {
      while (!settled) {
        await this.pool.query('SELECT pg_cancel_backend($1)', [backend]).catch(() => undefined);
        await sleep(CANCEL_REPEAT_MS);
      }
    };
    let cancelling: Promise<void> | undefined;
    const onAbort = () => void (cancelling = cancel());
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      if (signal?.aborted) return false;
      // The names were validated against the manifest by the load that just committed.
      await client.query(`ANALYZE ${tableNames.map((name) => quoteQualified(parseQualifiedName(name))).join(', ')}`);
      return true;
    } catch (error) {
      // 57014: query_canceled, by the stop's cancel.
      if (signal?.aborted && (error as { code?: unknown }).code === '57014') return false;
      throw error;
    } finally {
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      // A cancel still on its way could hit the backend's next statement once it is the pool's.
      await cancelling;
      client.release();
    }
  }

  /** What the ledger says the target holds (see LedgerRepository.latestLoad). */
  async latestLoad(): Promise<{ takenAt: string; loadedAtMs: number } | undefined> {
    if (!(await this.existingLedger())) return undefined;
    return this.ledger.latestLoad();
  }

  /** The ledger's entry for a snapshot, read on the pool (no lock, no transaction of a load). */
  async loadedEntry(snapshotId: string): Promise<LedgerEntry | undefined> {
    if (!(await this.existingLedger())) return undefined;
    return this.ledger.find(snapshotId);
  }

  async markAnnounced(snapshotId: string): Promise<void> {
    await this.ledger.markAnnounced(snapshotId);
  }
}
