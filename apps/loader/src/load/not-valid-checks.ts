import type { PoolClient } from 'pg';
import { quoteIdent } from '@app/common/database';
import type { Queryable } from '../database/queryable';
import { sqlLiteral } from './sql-literal';

/** A CHECK constraint production added NOT VALID: old rows may break it, so COPY must not check it. */
export interface NotValidCheck {
  /** On a table (or partition), or on a domain a loaded column uses (directly, as a base, an array's element, a composite's attribute or a range's subtype). */
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
 * those of the domains their columns use, however deep (an array's element, a composite's
 * attribute, a range's subtype). pg_dump writes such constraints after the data, so pg_restore
 * loads rows that break them; a load does the same (drop, COPY, add back NOT VALID).
 * Ordered parents first (by inheritance depth), as they must be dropped; restored in reverse, so
 * a child's own comes back before its parent's merges into it.
 */
export async function notValidChecks(db: Queryable, tableOids: number[]): Promise<NotValidCheck[]> {
  const { rows } = await db.query<NotValidCheck & { parents: string[] }>(
    `WITH RECURSIVE rels AS (
       SELECT r.oid AS relid FROM unnest($1::oid[]) r(oid) UNION SELECT tree.relid FROM unnest($1::oid[]) r(oid), pg_partition_tree(r.oid) tree
     ), types(oid) AS (
       SELECT a.atttypid FROM pg_attribute a JOIN rels ON rels.relid = a.attrelid WHERE a.attnum > 0 AND NOT a.attisdropped
       UNION
       -- What a value of the type holds, each checked as it is written: a domain's base type, an
       -- array's element, a composite's attributes, a range's subtype, a multirange's range.
       SELECT inner_type.oid
         FROM types JOIN pg_type t ON t.oid = types.oid
         CROSS JOIN LATERAL (
           SELECT t.typbasetype WHERE t.typtype = 'd'
           UNION ALL SELECT t.typelem WHERE t.typcategory = 'A' AND t.typelem <> 0
           UNION ALL SELECT a.atttypid FROM pg_attribute a WHERE t.typtype = 'c' AND a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
           UNION ALL SELECT r.rngsubtype FROM pg_range r WHERE r.rngtypid = t.oid
           UNION ALL SELECT r.rngtypid FROM pg_range r WHERE r.rngmultitypid = t.oid
         ) inner_type(oid)
     ), ancestry(relid, ancestor, depth) AS (
       -- Every table's ancestors, up the inheritance tree: its depth is the longest way up.
       SELECT relid, relid, 0 FROM rels
       UNION ALL
       SELECT ancestry.relid, i.inhparent, ancestry.depth + 1 FROM ancestry JOIN pg_inherits i ON i.inhrelid = ancestry.ancestor
     )
     SELECT kind, owner, name, definition, comment, parents FROM (
       SELECT 'TABLE' AS kind, quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS owner, con.conname AS name,
              pg_get_constraintdef(con.oid) AS definition, obj_description(con.oid, 'pg_constraint') AS comment,
              (SELECT max(depth) FROM ancestry WHERE ancestry.relid = con.conrelid) AS depth,
              -- The direct parents holding the check it also inherits (quoted table names).
              array(SELECT quote_ident(pn.nspname) || '.' || quote_ident(pc.relname)
                      FROM pg_inherits i JOIN pg_constraint parent ON parent.conrelid = i.inhparent AND parent.conname = con.conname AND parent.contype = 'c'
                      JOIN pg_class pc ON pc.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = pc.relnamespace
                     WHERE i.inhrelid = con.conrelid)::text[] AS parents
         FROM pg_constraint con JOIN rels ON rels.relid = con.conrelid
         JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE con.contype = 'c' AND NOT con.convalidated AND con.conislocal
       UNION ALL
       SELECT 'DOMAIN', quote_ident(n.nspname) || '.' || quote_ident(t.typname), con.conname,
              pg_get_constraintdef(con.oid), obj_description(con.oid, 'pg_constraint'), 0, '{}'::text[]
         FROM pg_constraint con JOIN pg_type t ON t.oid = con.contypid JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE con.contypid IN (SELECT oid FROM types) AND NOT con.convalidated
     ) checks
     ORDER BY kind, depth, owner, name`,
    [tableOids],
  );
  // A check a child has of its own and also inherits can only be dropped once every parent's copy
  // is (PostgreSQL refuses to drop an inherited one): where a parent's is not dropped too (the
  // parent is not loaded, or its check is valid), the child's stays, as before.
  const key = (owner: string, name: string) => `${owner}\u0000${name}`;
  let checks = rows;
  for (let removed = true; removed; ) {
    const kept = new Set(checks.map((check) => key(check.owner, check.name)));
    const next = checks.filter((check) => check.parents.every((parent) => kept.has(key(parent, check.name))));
    removed = next.length < checks.length;
    checks = next;
  }
  return checks.map(({ kind, owner, name, definition, comment }) => ({ kind, owner, name, definition, comment }));
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
