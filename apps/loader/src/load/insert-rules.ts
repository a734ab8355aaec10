import { quoteIdent } from '@app/common/database';
import type { Queryable } from '../database/queryable';

/** An `ON INSERT` rule (CREATE RULE) of a table the load fills with an INSERT, and its state. */
export interface InsertRule {
  /** The table, quoted and qualified. */
  table: string;
  name: string;
  /** pg_rewrite.ev_enabled: O (enabled), R (ENABLE REPLICA), A (ENABLE ALWAYS). */
  state: 'O' | 'R' | 'A';
}

const ENABLE: Record<InsertRule['state'], string> = { O: 'ENABLE RULE', R: 'ENABLE REPLICA RULE', A: 'ENABLE ALWAYS RULE' };

/**
 * The table's own enabled `ON INSERT` rules. Only the table's own: rows an INSERT routes to a
 * partition never go through the partition's rules, which PostgreSQL applies to the named table only.
 */
export async function insertRules(client: Queryable, tableOid: number): Promise<InsertRule[]> {
  const { rows } = await client.query<InsertRule>(
    `SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS table, r.rulename AS name, r.ev_enabled::text AS state
       FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE r.ev_class = $1 AND r.ev_type = '3' AND r.ev_enabled <> 'D'
      ORDER BY r.rulename`,
    [tableOid],
  );
  return rows;
}

/**
 * A table loaded with an INSERT (SCHEMA_DRIFT staging, a file of no columns) must take the rows the
 * way COPY does, which ignores rules: a rule would send rows elsewhere (DO INSTEAD), write other
 * tables as well (DO ALSO), or drop them. Disabled inside the load's transaction, under its
 * exclusive lock on the table, so no other session ever sees them off; a failed load's rollback
 * puts them back too.
 */
export async function disableInsertRules(client: Queryable, rules: InsertRule[]): Promise<void> {
  for (const rule of rules) await client.query(`ALTER TABLE ${rule.table} DISABLE RULE ${quoteIdent(rule.name)}`);
}

/** Puts every rule back in exactly the state it had (enabled, ENABLE REPLICA or ENABLE ALWAYS). */
export async function restoreInsertRules(client: Queryable, rules: InsertRule[]): Promise<void> {
  for (const rule of rules) await client.query(`ALTER TABLE ${rule.table} ${ENABLE[rule.state]} ${quoteIdent(rule.name)}`);
}
