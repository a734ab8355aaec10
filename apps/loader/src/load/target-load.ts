import type { PoolClient } from 'pg';
import { LedgerRepository } from '../ledger';
import { TargetCatalog } from '../target-schema';

/**
 * One load's transaction in the target: the client it holds from BEGIN to COMMIT (or ROLLBACK), and
 * the repositories that run on it. Everything a load changes goes through `client`, so either all
 * of it commits or none of it does.
 */
export class TargetLoad {
  readonly ledger: LedgerRepository;
  readonly catalog: TargetCatalog;
  private finished = false;

  // `client` comes from createPostgresPool, which hears its 'error' events while the load holds it:
  // a connection the server terminates mid-COPY fails the load (retried), never the process.
  constructor(readonly client: PoolClient) {
    this.ledger = new LedgerRepository(client);
    this.catalog = new TargetCatalog(client);
  }

  async query(sql: string, values?: unknown[]): Promise<void> {
    await this.client.query(sql, values);
  }

  async commit(): Promise<void> {
    try {
      await this.client.query('COMMIT');
      this.finish();
    } catch (error) {
      this.finish(error as Error);
      throw error;
    }
  }

  /** Undoes everything; safe to call after commit or twice (then it does nothing). */
  async rollback(): Promise<void> {
    if (this.finished) return;
    try {
      await this.client.query('ROLLBACK');
      this.finish();
    } catch (error) {
      // A connection that cannot even roll back is discarded, not returned to the pool.
      this.finish(error as Error);
    }
  }

  private finish(error?: Error): void {
    if (this.finished) return;
    this.finished = true;
    // A broken connection is discarded, not returned to the pool.
    this.client.release(error);
  }
}
