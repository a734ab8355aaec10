import type { PoolClient } from 'pg';
import type { TargetSequence } from '../target-schema';

/**
 * Sets each sequence to production's state, and only inside the load's transaction. `setval` alone
 * is not transactional: a load failing after it (a deferred trigger, a foreign key) would leave the
 * sequence moved. `ALTER SEQUENCE ... RESTART` is: it gives the sequence a new relation file, so the
 * `setval` that follows writes to that file, which a rollback throws away with everything else.
 */
export async function setSequences(client: PoolClient, sequences: TargetSequence[]): Promise<void> {
  for (const sequence of sequences) {
    await client.query(`ALTER SEQUENCE ${sequence.name} RESTART`);
    await client.query('SELECT setval($1::regclass, $2::bigint, $3)', [sequence.name, sequence.lastValue, sequence.isCalled]);
  }
}
