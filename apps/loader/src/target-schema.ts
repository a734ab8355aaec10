import type { ClientBase } from 'pg';
import { formatQualifiedName, type ManifestTable, quoteIdent, quoteQualified } from '@app/common';

/** The target's schema does not fit the snapshot: a permanent failure naming what is missing. */
export class TargetSchemaError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TargetSchemaError';
  }
}

export interface TargetTable {
  oid: number;
  manifest: ManifestTable;
}

/**
 * The target schema belongs to the environment; the loader never creates or alters tables.
 * Every snapshot table and column must exist there, or the load fails naming all that is missing.
 */
export async function resolveTargetTables(client: ClientBase, tables: ManifestTable[]): Promise<TargetTable[]> {
  const problems: string[] = [];
  const resolved: TargetTable[] = [];
  for (const table of tables) {
    const { rows } = await client.query<{ oid: number | null }>('SELECT to_regclass($1)::oid::int AS oid', [quoteQualified({ schema: table.schema, name: table.table })]);
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
    resolved.push({ oid, manifest: table });
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
export async function foreignKeysTouching(client: ClientBase, tableOids: number[]): Promise<ForeignKey[]> {
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

export function describeTable(table: { schema: string; table: string }): string {
  return formatQualifiedName({ schema: table.schema, name: table.table });
}
