import type { ClientBase } from 'pg';
import { type ManifestSequence } from '@app/common/contract';
import { formatQualifiedName, quoteIdent } from '@app/common/database';

export interface SourceTable {
  oid: number;
  schema: string;
  name: string;
  partitioned: boolean;
  columns: string[];
  /** On-disk size, to dump the largest tables first when dumping in parallel. */
  bytes: number;
}

type TableRef = { schema: string; name: string };

const sameTable = (a: TableRef, b: TableRef) => a.schema === b.schema && a.name === b.name;

/**
 * The source's catalog, read through one dump session (the leader's): what to dump and the
 * sequences that go with it. Every read runs in whatever transaction the session is in.
 */
export class TableCatalog {
  constructor(private readonly session: ClientBase) {}

  /**
   * The tables to dump: every ordinary (or partitioned) table outside system schemas, or the
   * TABLES list, minus EXCLUDE_TABLES. Partitions travel through their parent; tables owned by
   * extensions belong to the extension. A TABLES entry that does not exist is an error, not a skip.
   */
  async listTables(include: TableRef[], exclude: TableRef[]): Promise<SourceTable[]> {
    return listSourceTables(this.session, include, exclude);
  }

  /** Current values of the sequences owned by the tables' columns (serial and identity). */
  async readSequences(tables: SourceTable[]): Promise<ManifestSequence[]> {
    return readOwnedSequences(this.session, tables);
  }
}

async function listSourceTables(client: ClientBase, include: TableRef[], exclude: TableRef[]): Promise<SourceTable[]> {
  const { rows } = await client.query<{ oid: number; schema: string; name: string; relkind: string; bytes: string }>(`
    SELECT c.oid::int AS oid, n.nspname AS schema, c.relname AS name, c.relkind,
           CASE WHEN c.relkind = 'p' THEN coalesce((SELECT sum(pg_relation_size(p.relid)) FROM pg_partition_tree(c.oid) p), 0)
                ELSE pg_relation_size(c.oid) END::text AS bytes
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p')
       AND NOT c.relispartition
       AND n.nspname NOT IN ('pg_catalog', 'information_schema')
       AND n.nspname NOT LIKE 'pg\\_toast%'
       AND n.nspname NOT LIKE 'pg\\_temp\\_%'
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
     ORDER BY n.nspname, c.relname`);

  const missing = include.filter((wanted) => !rows.some((row) => sameTable(row, wanted)));
  if (missing.length) {
    throw new Error(`TABLES names table(s) not found in the source: ${missing.map(formatQualifiedName).join(', ')}`);
  }
  const selected = rows.filter(
    (row) => (include.length === 0 || include.some((t) => sameTable(row, t))) && !exclude.some((t) => sameTable(row, t)),
  );
  if (selected.length === 0) throw new Error('no tables selected for the snapshot (check TABLES and EXCLUDE_TABLES)');

  const { rows: columns } = await client.query<{ oid: number; name: string }>(
    `SELECT attrelid::int AS oid, attname AS name
       FROM pg_attribute
      WHERE attrelid = ANY($1::oid[]) AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
      ORDER BY attrelid, attnum`,
    [selected.map((row) => row.oid)],
  );
  return selected.map((row) => ({
    oid: row.oid,
    schema: row.schema,
    name: row.name,
    partitioned: row.relkind === 'p',
    bytes: Number(row.bytes),
    columns: columns.filter((c) => c.oid === row.oid).map((c) => c.name),
  }));
}

async function readOwnedSequences(client: ClientBase, tables: SourceTable[]): Promise<ManifestSequence[]> {
  const { rows } = await client.query<{ seq_schema: string; seq_name: string; table_oid: number; column: string }>(
    `SELECT sn.nspname AS seq_schema, s.relname AS seq_name, d.refobjid::int AS table_oid, a.attname AS column
       FROM pg_depend d
       JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
       JOIN pg_namespace sn ON sn.oid = s.relnamespace
       JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
      WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
        AND d.deptype IN ('a', 'i') AND d.refobjid = ANY($1::oid[])
      ORDER BY 1, 2`,
    [tables.map((t) => t.oid)],
  );
  const sequences: ManifestSequence[] = [];
  for (const row of rows) {
    const table = tables.find((t) => t.oid === row.table_oid)!;
    const { rows: values } = await client.query<{ last_value: string; is_called: boolean }>(
      `SELECT last_value::text AS last_value, is_called FROM ${quoteIdent(row.seq_schema)}.${quoteIdent(row.seq_name)}`,
    );
    sequences.push({
      table: formatQualifiedName(table),
      schema: table.schema,
      tableName: table.name,
      column: row.column,
      lastValue: values[0].last_value,
      isCalled: values[0].is_called,
    });
  }
  return sequences;
}

