import type { PoolClient } from 'pg';
import { quoteIdent } from '@app/common/database';
import type { Queryable } from '../database/queryable';
import { sqlLiteral } from './sql-literal';

/** A CHECK constraint production added NOT VALID: old rows may break it, so COPY must not check it. */
export interface NotValidCheck {
  /** On a table (or partition), or on a domain a loaded column uses (directly, as a base, or as an array's element). */
  kind: 'TABLE' | 'DOMAIN';
  /** The table or domain, quoted. */
  owner: string;
  name: string;
  /** pg_get_constraintdef: `CHECK (...) NOT VALID`, NO INHERIT included. */
  definition: string;
  comment: string | null;
}

/**
 * The NOT VALID CHECK constraints a load's COPY would enforce: those of the snapshot tables and
 * their partitions that are defined there (`conislocal`: dropping a parent's drops the copies its
 * children only inherit, but one a child also has of its own stays, and must be dropped too), and
 * those of the domains their columns use. pg_dump writes such constraints after the data, so
 * pg_restore loads rows that break them; a load does the same (drop, COPY, add back NOT VALID).
 * Ordered parents first (by inheritance depth), as they must be dropped; restored in reverse, so
 * a child's own comes back before its parent's merges into it.
 */
export async function notValidChecks(db: Queryable, tableOids: number[]): Promise<NotValidCheck[]> {
  const { rows } = await db.query<NotValidCheck>(
    `WITH RECURSIVE rels AS (
       SELECT r.oid AS relid FROM unnest($1::oid[]) r(oid) UNION SELECT tree.relid FROM unnest($1::oid[]) r(oid), pg_partition_tree(r.oid) tree
     ), types(oid) AS (
       SELECT a.atttypid FROM pg_attribute a JOIN rels ON rels.relid = a.attrelid WHERE a.attnum > 0 AND NOT a.attisdropped
       UNION
       SELECT CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.typelem END
         FROM types JOIN pg_type t ON t.oid = types.oid
        WHERE t.typtype = 'd' OR (t.typcategory = 'A' AND t.typelem <> 0)
     ), ancestry(relid, ancestor, depth) AS (
       -- Every table's ancestors, up the inheritance tree: its depth is the longest way up.
       SELECT relid, relid, 0 FROM rels
       UNION ALL
       SELECT ancestry.relid, i.inhparent, ancestry.depth + 1 FROM ancestry JOIN pg_inherits i ON i.inhrelid = ancestry.ancestor
     )
     SELECT kind, owner, name, definition, comment FROM (
       SELECT 'TABLE' AS kind, quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS owner, con.conname AS name,
              pg_get_constraintdef(con.oid) AS definition, obj_description(con.oid, 'pg_constraint') AS comment,
              (SELECT max(depth) FROM ancestry WHERE ancestry.relid = con.conrelid) AS depth
         FROM pg_constraint con JOIN rels ON rels.relid = con.conrelid
         JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE con.contype = 'c' AND NOT con.convalidated AND con.conislocal
       UNION ALL
       SELECT 'DOMAIN', quote_ident(n.nspname) || '.' || quote_ident(t.typname), con.conname,
              pg_get_constraintdef(con.oid), obj_description(con.oid, 'pg_constraint'), 0
         FROM pg_constraint con JOIN pg_type t ON t.oid = con.contypid JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE con.contypid IN (SELECT oid FROM types) AND NOT con.convalidated
     ) checks
     ORDER BY kind, depth, owner, name`,
    [tableOids],
  );
  return rows;
}

export async function dropNotValidChecks(client: PoolClient, checks: NotValidCheck[]): Promise<void> {
  for (const check of checks) await client.query(`ALTER ${check.kind} ${check.owner} DROP CONSTRAINT ${quoteIdent(check.name)}`);
}

/** Adds them back as they were: NOT VALID (nothing is checked), with their comments. */
export async function restoreNotValidChecks(client: PoolClient, checks: NotValidCheck[]): Promise<void> {
  for (const check of [...checks].reverse()) {
    await client.query(`ALTER ${check.kind} ${check.owner} ADD CONSTRAINT ${quoteIdent(check.name)} ${check.definition}`);
    if (check.comment !== null) await client.query(`COMMENT ON CONSTRAINT ${quoteIdent(check.name)} ON ${check.kind === 'DOMAIN' ? 'DOMAIN ' : ''}${check.owner} IS ${sqlLiteral(check.comment)}`);
  }
}
