import type { PoolClient } from 'pg';
import { quoteIdent } from '@app/common/database';
import type { UserTrigger } from '../target-schema';

const ENABLE: Record<UserTrigger['state'], string> = { O: 'ENABLE TRIGGER', R: 'ENABLE REPLICA TRIGGER', A: 'ENABLE ALWAYS TRIGGER' };

/**
 * The environment's own triggers must not fire for loaded rows (as `pg_restore --disable-triggers`):
 * an audit trigger would log every row, a BEFORE trigger could rewrite production's rows. Disabled
 * inside the load's transaction, so no other session ever sees them off; each is disabled on its own
 * table only (ONLY), so that partitions keep their own states.
 */
export async function disableUserTriggers(client: PoolClient, triggers: UserTrigger[]): Promise<void> {
  for (const trigger of triggers) await client.query(`ALTER TABLE ONLY ${trigger.table} DISABLE TRIGGER ${quoteIdent(trigger.name)}`);
}

/** Puts every trigger back in exactly the state it had (enabled, ENABLE REPLICA or ENABLE ALWAYS). */
export async function restoreUserTriggers(client: PoolClient, triggers: UserTrigger[]): Promise<void> {
  for (const trigger of triggers) await client.query(`ALTER TABLE ONLY ${trigger.table} ${ENABLE[trigger.state]} ${quoteIdent(trigger.name)}`);
}
