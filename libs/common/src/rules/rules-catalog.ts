import type { ClientBase } from 'pg';
import type { TableName } from './rules-file';
import { LEDGER_SCHEMA } from '../contract/manifest';

export interface CatalogColumn {
  name: string;
  /** As PostgreSQL writes it, with modifiers: `character varying(40)`, `citext`, `"My Type"`. */
  type: string;
  /** The type's own name once domains are looked through: `text`, `citext`, `int4`, `jsonb`... */
  baseType: string;
  /** pg_type.typcategory of the base type: `S` string, `N` numeric, `A` array, `U` user... */
  category: string;
  /** The characters a `varchar(n)` / `char(n)` column holds (on it or on one of its domains), else null. */
  maxLength: number | null;
  /**
   * NOT NULL on the column, on one of its domains (a domain's NOT NULL refuses a NULL just the same),
   * or, for a partitioned table, on the column of that name in any of its partitions.
   */
  notNull: boolean;
  /** The column's collation, qualified and quoted (`pg_catalog."C"`); null for a type without one. */
  collation: string | null;
  /** Generated columns are not dumped: the environment computes them from the (masked) row. */
  generated: boolean;
  /** False under a nondeterministic collation (ICU, case- or accent-insensitive): unequal values may compare equal. */
  deterministic: boolean;
}

/**
 * A primary key, unique constraint, unique index or exclusion constraint (a partition's own ones
 * too): what two rows must not share.
 */
export interface CatalogKey {
  /** Its index's name, which is the constraint's for a constraint. */
  name: string;
  /** An exclusion constraint (EXCLUDE USING ...), not a unique key. */
  exclusion: boolean;
  /** The columns it holds or reads, a stored generated one with the columns it is computed from. */
  columns: string[];
  /**
   * Its key columns held as they are (not through an expression or a generated column), in key
   * order: a NULL there stays a NULL, which the key compares as distinct (unless nullsNotDistinct).
   */
  keyColumns: string[];
  /** Its INCLUDE columns held as they are: no part of what rows must not share. */
  includedColumns: string[];
  /** NULLs are equal (UNIQUE NULLS NOT DISTINCT, PostgreSQL 15): two NULLs collide. */
  nullsNotDistinct: boolean;
  /**
   * Every row of the table has its own value of keyColumns, which are all its key: a primary key,
   * or a UNIQUE over NOT NULL columns or NULLS NOT DISTINCT, without expression or WHERE, declared
   * on the table itself (not on one of its partitions only).
   */
  identifiesRows: boolean;
}

export interface CatalogTable extends TableName {
  partitioned: boolean;
  columns: CatalogColumn[];
  keys: CatalogKey[];
}

export interface CatalogForeignKey {
  constraint: string;
  from: TableName;
  fromColumns: string[];
  to: TableName;
  toColumns: string[];
}

/** What rules are checked against: every user table of the database, its keys and its foreign keys. */
export interface RulesCatalog {
  tables: CatalogTable[];
  foreignKeys: CatalogForeignKey[];
  /** Partitions, by their partitioned table (not in `tables`: the dump reads them through it). */
  partitions: { table: TableName; root: TableName }[];
  /** Inheritance children (INHERITS) of ordinary tables: each is dumped on its own, read ONLY. */
  inheritance: { table: TableName; parent: TableName }[];
  /** Views, materialized views and foreign tables: relations the dump does not copy. */
  notCopied: { table: TableName; kind: 'view' | 'materialized view' | 'foreign table' }[];
}

const USER_TABLES = `
  c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', '${LEDGER_SCHEMA}') AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')`;

/** Reads the catalog in the caller's transaction (the dumper's snapshot, or the CLI's own). */
export async function readRulesCatalog(client: ClientBase): Promise<RulesCatalog> {
  const { rows: columns } = await client.query<{
    oid: number;
    schema: string;
    table: string;
    relkind: string;
    column: string | null;
    type: string | null;
    base_type: string | null;
    category: string | null;
    max_length: number | null;
    not_null: boolean | null;
    collation: string | null;
    generated: boolean | null;
    deterministic: boolean | null;
  }>(`
    -- NOT NULL set on a partition alone (ALTER TABLE events_eu ALTER note SET NOT NULL): the load
    -- writes through the partitioned table, and a NULL routed there fails it. By name: a partition's
    -- columns have its parent's names, not always its attnums (one attached with another column order).
    WITH partition_not_null AS (
      SELECT DISTINCT pg_partition_root(p.oid) AS root, pa.attname
        FROM pg_class p JOIN pg_attribute pa ON pa.attrelid = p.oid AND pa.attnum > 0 AND NOT pa.attisdropped
       WHERE p.relispartition AND pa.attnotnull)
    SELECT c.oid::int AS oid, n.nspname AS schema, c.relname AS table, c.relkind, a.attname AS column,
           format_type(a.atttypid, a.atttypmod) AS type, bt.typname AS base_type, bt.typcategory AS category,
           CASE WHEN bt.typname IN ('varchar', 'bpchar') AND base.typmod >= 4 THEN base.typmod - 4 END AS max_length,
           a.attnotnull OR base.domain_not_null
             OR EXISTS (SELECT 1 FROM partition_not_null pn WHERE pn.root = c.oid AND pn.attname = a.attname) AS not_null, a.attgenerated <> '' AS generated,
           (SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname)
              FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = a.attcollation) AS collation,
           coalesce((SELECT co.collisdeterministic FROM pg_collation co WHERE co.oid = a.attcollation), true) AS deterministic
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      -- Domains: follow typbasetype to the type underneath (a domain over a domain has the middle
      -- one there), keeping the first length modifier met on the way in: the column's, else a domain's,
      -- and whether any domain on the way is NOT NULL.
      LEFT JOIN LATERAL (
        WITH RECURSIVE chain(oid, typmod, domain_not_null, depth) AS (
          SELECT a.atttypid, a.atttypmod, false, 0
          UNION ALL
          SELECT d.typbasetype, CASE WHEN chain.typmod >= 0 THEN chain.typmod ELSE d.typtypmod END, chain.domain_not_null OR d.typnotnull, chain.depth + 1
            FROM chain JOIN pg_type d ON d.oid = chain.oid AND d.typtype = 'd')
        SELECT oid, typmod, domain_not_null FROM chain ORDER BY depth DESC LIMIT 1) base ON a.attnum IS NOT NULL
      LEFT JOIN pg_type bt ON bt.oid = base.oid
     WHERE ${USER_TABLES}
     ORDER BY n.nspname, c.relname, a.attnum`);
  const byOid = new Map<number, CatalogTable>();
  for (const row of columns) {
    let table = byOid.get(row.oid);
    if (!table) {
      table = { schema: row.schema, name: row.table, partitioned: row.relkind === 'p', columns: [], keys: [] };
      byOid.set(row.oid, table);
    }
    if (row.column === null) continue;
    table.columns.push({
      name: row.column,
      type: row.type!,
      baseType: row.base_type!,
      category: row.category!,
      maxLength: row.max_length,
      notNull: row.not_null!,
      collation: row.collation,
      generated: row.generated!,
      deterministic: row.deterministic!,
    });
  }

  // A unique index's columns: its key columns, and those its expressions and predicate read
  // (`lower(username)`: indkey holds 0 for an expression; the index depends on the columns it reads).
  // A stored generated column among them stands for the columns it is computed from (its pg_attrdef
  // depends on them): the dump leaves it out and the environment computes it from the masked row, so
  // `redact` on `ssn` repeats values in a UNIQUE `replace(ssn, '-', '')` just as in one on `ssn`.
  // One on a single partition counts for its partitioned table (the dump reads the partition through
  // it; a partition's columns have its parent's names); one attached to a parent's index is the
  // parent's, read there. indnullsnotdistinct through to_jsonb: the column is new in PostgreSQL 15.
  // An exclusion constraint counts too: `EXCLUDE USING gist (nick WITH =)` refuses two equal nicks
  // as a UNIQUE does (its index is not indisunique). Key columns are the first indnkeyatts of
  // indkey, INCLUDE ones the rest; 0 there is an expression.
  const { rows: unique } = await client.query<{
    oid: number;
    name: string;
    exclusion: boolean;
    columns: string[];
    key_columns: string[];
    included_columns: string[];
    nulls_not_distinct: boolean;
    identifies_rows: boolean;
  }>(`
    SELECT coalesce(pg_partition_root(i.indrelid), i.indrelid)::int AS oid, ic.relname AS name, i.indisexclusion AS exclusion,
           array(SELECT a.attname FROM unnest(k.key_attnums) WITH ORDINALITY u(attnum, ord)
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = u.attnum AND a.attgenerated = '' ORDER BY u.ord)::text[] AS key_columns,
           array(SELECT a.attname FROM unnest(k.included_attnums) WITH ORDINALITY u(attnum, ord)
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = u.attnum AND a.attgenerated = '' ORDER BY u.ord)::text[] AS included_columns,
           NOT i.indisexclusion AND i.indexprs IS NULL AND i.indpred IS NULL AND coalesce(pg_partition_root(i.indrelid), i.indrelid) = i.indrelid
             AND NOT EXISTS (SELECT 1 FROM unnest(k.key_attnums) u(attnum)
                              LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = u.attnum
                              WHERE a.attname IS NULL OR a.attgenerated <> ''
                                 OR NOT (a.attnotnull OR coalesce((to_jsonb(i) ->> 'indnullsnotdistinct')::boolean, false))) AS identifies_rows,
           array(SELECT a.attname FROM pg_attribute a
                  WHERE a.attrelid = i.indrelid AND a.attnum > 0
                    AND (a.attnum = ANY(k.attnums)
                         OR a.attnum IN (SELECT d.refobjsubid FROM pg_attrdef ad
                                           JOIN pg_attribute g ON g.attrelid = ad.adrelid AND g.attnum = ad.adnum AND g.attgenerated <> ''
                                           JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
                                                           AND d.refclassid = 'pg_class'::regclass AND d.refobjid = ad.adrelid
                                          WHERE ad.adrelid = i.indrelid AND ad.adnum = ANY(k.attnums)))
                  ORDER BY a.attnum)::text[] AS columns,
           coalesce((to_jsonb(i) ->> 'indnullsnotdistinct')::boolean, false) AS nulls_not_distinct
      FROM pg_index i
      JOIN pg_class ic ON ic.oid = i.indexrelid,
           LATERAL (SELECT array(SELECT unnest(i.indkey::int2[])::int
                                 UNION
                                 SELECT d.refobjsubid FROM pg_depend d
                                  WHERE d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid
                                    AND d.refclassid = 'pg_class'::regclass AND d.refobjid = i.indrelid) AS attnums,
                           (i.indkey::int2[])[0:i.indnkeyatts - 1]::int[] AS key_attnums,
                           coalesce((i.indkey::int2[])[i.indnkeyatts:], '{}')::int[] AS included_attnums) k
     WHERE (i.indisunique OR i.indisexclusion) AND coalesce(pg_partition_root(i.indrelid), i.indrelid) = ANY($1::oid[])
       AND NOT EXISTS (SELECT 1 FROM pg_inherits inh WHERE inh.inhrelid = i.indexrelid)`,
    [[...byOid.keys()]],
  );
  for (const row of unique) {
    byOid.get(row.oid)?.keys.push({
      name: row.name,
      exclusion: row.exclusion,
      columns: row.columns,
      keyColumns: row.key_columns,
      includedColumns: row.included_columns,
      nullsNotDistinct: row.nulls_not_distinct,
      identifiesRows: row.identifies_rows,
    });
  }

  // Constraints declared on a partitioned table are inherited by its partitions: read them on the
  // parent only (conparentid = 0). One declared on a single partition, or pointing at one, counts
  // for the partitioned table it belongs to: the dump reads partitions through their parent.
  const { rows: fks } = await client.query<{ constraint: string; from_oid: number; to_oid: number; from_columns: string[]; to_columns: string[] }>(`
    SELECT con.conname AS constraint, f.root::int AS from_oid, t.root::int AS to_oid,
           array(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
                   JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum ORDER BY k.ord)::text[] AS from_columns,
           array(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(attnum, ord)
                   JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum ORDER BY k.ord)::text[] AS to_columns
      FROM pg_constraint con,
           LATERAL (SELECT coalesce(pg_partition_root(con.conrelid), con.conrelid) AS root) f,
           LATERAL (SELECT coalesce(pg_partition_root(con.confrelid), con.confrelid) AS root) t
     WHERE con.contype = 'f' AND con.conparentid = 0 AND f.root = ANY($1::oid[]) AND t.root = ANY($1::oid[])
     ORDER BY con.conname`,
    [[...byOid.keys()]],
  );
  const { rows: partitions } = await client.query<{ schema: string; name: string; root: number }>(`
    SELECT n.nspname AS schema, c.relname AS name, pg_partition_root(c.oid)::int AS root
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relispartition AND pg_partition_root(c.oid) = ANY($1::oid[])`,
    [[...byOid.keys()]],
  );
  // Inheritance children of the tables above (a partitioned table's children are its partitions).
  const { rows: children } = await client.query<{ oid: number; parent: number }>(`
    SELECT inh.inhrelid::int AS oid, inh.inhparent::int AS parent
      FROM pg_inherits inh JOIN pg_class p ON p.oid = inh.inhparent
     WHERE p.relkind = 'r' AND inh.inhparent = ANY($1::oid[]) AND inh.inhrelid = ANY($1::oid[])
     ORDER BY inh.inhparent, inh.inhseqno, inh.inhrelid`,
    [[...byOid.keys()]],
  );
  const { rows: notCopied } = await client.query<{ schema: string; name: string; relkind: 'v' | 'm' | 'f' }>(`
    SELECT n.nspname AS schema, c.relname AS name, c.relkind
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('v', 'm', 'f') AND NOT c.relispartition AND n.nspname NOT IN ('pg_catalog', 'information_schema')`);
  const tableOf = (oid: number): TableName => {
    const { schema, name } = byOid.get(oid)!;
    return { schema, name };
  };
  return {
    tables: [...byOid.values()],
    foreignKeys: fks.map((fk) => ({
      constraint: fk.constraint,
      from: tableOf(fk.from_oid),
      fromColumns: fk.from_columns,
      to: tableOf(fk.to_oid),
      toColumns: fk.to_columns,
    })),
    partitions: partitions.map((p) => ({ table: { schema: p.schema, name: p.name }, root: tableOf(p.root) })),
    inheritance: children.map((c) => ({ table: tableOf(c.oid), parent: tableOf(c.parent) })),
    notCopied: notCopied.map((r) => ({
      table: { schema: r.schema, name: r.name },
      kind: ({ v: 'view', m: 'materialized view', f: 'foreign table' } as const)[r.relkind],
    })),
  };
}
