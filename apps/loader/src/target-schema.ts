import { type ManifestTable } from '@app/common/contract';
import { quoteIdent, quoteQualified } from '@app/common/database';
import type { Queryable } from './database/queryable';

/** The target's schema does not fit the snapshot: a permanent failure naming what is missing. */
export class TargetSchemaError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TargetSchemaError';
  }
}

export interface TargetTable {
  oid: number;
  partitioned: boolean;
  manifest: ManifestTable;
}

/**
 * The target schema belongs to the environment; the loader never creates or alters tables.
 * Every snapshot table and column must exist there, or the load fails naming all that is missing.
 */
export async function resolveTargetTables(client: Queryable, tables: ManifestTable[]): Promise<TargetTable[]> {
  const problems: string[] = [];
  const resolved: TargetTable[] = [];
  for (const table of tables) {
    const { rows } = await client.query<{ oid: number | null; partitioned: boolean }>(
      "SELECT c.oid::int AS oid, c.relkind = 'p' AS partitioned FROM pg_class c WHERE c.oid = to_regclass($1)",
      [quoteQualified({ schema: table.schema, name: table.table })],
    );
    const oid = rows[0]?.oid;
    if (!oid) {
      problems.push(`table ${table.name} does not exist in the target`);
      continue;
    }
    const { rows: columns } = await client.query<{ name: string; generated: boolean }>(
      `SELECT attname AS name, attgenerated <> '' AS generated FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped`,
      [oid],
    );
    const insertable = new Set(columns.filter((c) => !c.generated).map((c) => c.name));
    const missing = table.columns.filter((c) => !insertable.has(c));
    if (missing.length) {
      problems.push(`column(s) ${missing.map((c) => `${table.name}.${quoteIdent(c)}`).join(', ')} missing in the target`);
      continue;
    }
    resolved.push({ oid, partitioned: rows[0].partitioned, manifest: table });
  }
  if (problems.length) throw new TargetSchemaError(problems.join('; '));
  return resolved;
}

export interface ForeignKey {
  table: string;
  name: string;
  definition: string;
}

/**
 * Foreign keys on, or pointing at, the snapshot's tables. They are dropped for the load and
 * re-added (and so fully re-validated) before commit: load order stops mattering, cycles and
 * self-references work, and every constraint still holds once the transaction commits.
 */
export async function foreignKeysTouching(client: Queryable, tableOids: number[]): Promise<ForeignKey[]> {
  const { rows } = await client.query<{ schema: string; table: string; name: string; definition: string }>(
    `SELECT n.nspname AS schema, c.relname AS table, con.conname AS name, pg_get_constraintdef(con.oid) AS definition
       FROM pg_constraint con
       JOIN pg_class c ON c.oid = con.conrelid
       JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE con.contype = 'f' AND con.conparentid = 0
        AND (con.conrelid = ANY($1::oid[]) OR con.confrelid = ANY($1::oid[]))
      ORDER BY 1, 2, 3`,
    [tableOids],
  );
  return rows.map((row) => ({ table: quoteQualified({ schema: row.schema, name: row.table }), name: row.name, definition: row.definition }));
}

export interface IndexDefinition {
  /** The index's (and its table's) schema, unquoted. */
  schema: string;
  table: string;
  name: string;
  /** Set for indexes that back a PRIMARY KEY, UNIQUE or EXCLUDE constraint. */
  constraint: boolean;
  definition: string;
  clustered: boolean;
  comment: string | null;
}

/**
 * Indexes (and the key constraints they back) of ordinary snapshot tables, to drop before the load
 * and build once after it: one sort per index instead of a b-tree insert per row. Indexes used as
 * replica identity stay, and so do those of partitioned tables (their definitions cannot be replayed
 * on the parent alone).
 */
export async function deferrableIndexes(client: Queryable, tables: TargetTable[]): Promise<IndexDefinition[]> {
  const oids = tables.filter((t) => !t.partitioned).map((t) => t.oid);
  // pg_get_indexdef and pg_get_constraintdef leave out a non-default tablespace: it is added back.
  const { rows } = await client.query<{ schema: string; table: string; name: string; constraint: boolean; definition: string; clustered: boolean; comment: string | null }>(
    `SELECT n.nspname AS schema, c.relname AS table,
            coalesce(con.conname, ic.relname) AS name,
            con.oid IS NOT NULL AS constraint,
            CASE WHEN con.oid IS NOT NULL
                 THEN pg_get_constraintdef(con.oid) || coalesce(' USING INDEX TABLESPACE ' || quote_ident(ts.spcname), '')
                 ELSE pg_get_indexdef(i.indexrelid) || coalesce(' TABLESPACE ' || quote_ident(ts.spcname), '') END AS definition,
            i.indisclustered AS clustered,
            CASE WHEN con.oid IS NOT NULL THEN obj_description(con.oid, 'pg_constraint') ELSE obj_description(i.indexrelid, 'pg_class') END AS comment
       FROM pg_index i
       JOIN pg_class ic ON ic.oid = i.indexrelid
       LEFT JOIN pg_tablespace ts ON ts.oid = ic.reltablespace
       JOIN pg_class c ON c.oid = i.indrelid
       JOIN pg_namespace n ON n.oid = c.relnamespace
       LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u', 'x')
      WHERE i.indrelid = ANY($1::oid[]) AND NOT i.indisreplident
      ORDER BY con.oid IS NULL, 1, 2, 3`,
    [oids],
  );
  return rows.map((row) => ({
    schema: row.schema,
    table: quoteQualified({ schema: row.schema, name: row.table }),
    name: row.name,
    constraint: row.constraint,
    definition: row.definition,
    clustered: row.clustered,
    comment: row.comment,
  }));
}

/** The target's catalog as a load sees it, read through the load's own client (inside its transaction). */
export class TargetCatalog {
  constructor(private readonly db: Queryable) {}

  resolveTables(tables: ManifestTable[]): Promise<TargetTable[]> {
    return resolveTargetTables(this.db, tables);
  }

  foreignKeysTouching(tableOids: number[]): Promise<ForeignKey[]> {
    return foreignKeysTouching(this.db, tableOids);
  }

  deferrableIndexes(tables: TargetTable[]): Promise<IndexDefinition[]> {
    return deferrableIndexes(this.db, tables);
  }
}
