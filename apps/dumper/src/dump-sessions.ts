import type { PoolClient } from 'pg';
import type { DumpSessionSource } from './source-database';

/**
 * The sessions one dump attempt holds (the leader and its workers), from the source's pool.
 * `abort()` ends them all at once: a COPY in flight is cut off and the server rolls back and
 * releases every lock the dump held, so production never waits for the rest of a failed attempt.
 */
export class DumpSessions {
  private readonly held: PoolClient[] = [];
  private aborted?: Error;

  constructor(private readonly source: DumpSessionSource) {}

  async open(): Promise<PoolClient> {
    const client = await this.source.connect();
    if (this.aborted) {
      client.release(this.aborted);
      throw this.aborted;
    }
    this.held.push(client);
    return client;
  }

  /** Hands the sessions back to the pool (after COMMIT: they are idle and clean). */
  release(): void {
    for (const client of this.held.splice(0)) client.release();
  }

  /** abort() was called: the attempt's sessions are gone (or going). */
  get isAborted(): boolean {
    return this.aborted !== undefined;
  }

  /** Destroys the sessions (the pool replaces them): an active query ends with the connection. */
  abort(reason: Error = new Error('dump aborted')): void {
    this.aborted ??= reason;
    for (const client of this.held.splice(0)) client.release(reason);
  }
}
