import type { ClientBase } from 'pg';
import { LEDGER_SCHEMA, type ManifestSequence, type ManifestStandaloneSequence } from '@app/common/contract';
import { formatQualifiedName, type LocalPartitions, type PartitionLeaf, partitionLeaves, quoteIdent, quoteQualified } from '@app/common/database';

export interface SourceTable {
  oid: number;
  schema: string;
  name: string;
  partitioned: boolean;
  columns: string[];
  /** On-disk size, to dump the largest tables first when dumping in parallel. */
  bytes: number;
  /** Row-level security would filter this table for the dump's role (row_security_active). */
  filteredByPolicy: boolean;
  /** Its local leaf partitions, when some are foreign (see LocalPartitions); absent when every partition is local. */
  localPartitions?: LocalPartitions;
}

type TableRef = { schema: string; name: string };

function localPartitionsOf(
  oid: number,
  leaves: PartitionLeaf[],
  columns: { oid: number; name: string }[],
): Pick<SourceTable, 'localPartitions'> {
  const own = leaves.filter((leaf) => leaf.root === oid);
  if (!own.some((leaf) => leaf.foreign)) return {};
  const ref = ({ schema, name }: TableRef) => ({ schema, name });
  return {
    localPartitions: {
      leaves: own.filter((leaf) => !leaf.foreign).map(ref),
      foreign: own.filter((leaf) => leaf.foreign).map(ref),
      columns: columns.filter((c) => c.oid === oid).map((c) => c.name),
    },
  };
}

const sameTable = (a: TableRef, b: TableRef) => a.schema === b.schema && a.name === b.name;

/** The dump's role may not read every row of some tables: dumping them would ship a silent subset. */
export class RowSecurityError extends Error {
  readonly code = 'row-security';

  constructor(tables: TableRef[], role: string) {
    super(
      `row-level security policies filter ${tables.map(formatQualifiedName).join(', ')} for role ${JSON.stringify(role)}, ` +
        'so the dump would silently hold a subset of production; give the role BYPASSRLS (ALTER ROLE ... BYPASSRLS), ' +
        'or make it the table owner (without FORCE ROW LEVEL SECURITY), or grant pg_read_all_data plus BYPASSRLS',
    );
    this.name = 'RowSecurityError';
  }
}

/**
 * The source's catalog, read through one dump session (the leader's): what to dump, the locks that
 * keep it still, the snapshot's instant and the sequences that go with it. Every read runs in
 * whatever transaction the session is in, so the caller decides what is read before the snapshot.
 */
export class TableCatalog {
  constructor(private readonly session: ClientBase) {}

  /**
   * The tables to dump: every ordinary (or partitioned) table outside system schemas and the
   * loaders' ledger schema `db_fanout` (a source that is itself some pipeline's environment would
   * otherwise hand its ledger to every target, replacing theirs), or the
   * TABLES list, minus EXCLUDE_TABLES. Partitions travel through their parent; tables owned by
   * extensions belong to the extension. A TABLES entry that does not exist is an error, not a skip.
   */
  async listTables(include: TableRef[], exclude: TableRef[]): Promise<SourceTable[]> {
    // No size here: pg_relation_size takes a lock, and on every table of the source it waited
    // behind a lock on a table TABLES/EXCLUDE_TABLES leave out (sizes come below, for those selected).
    const { rows: candidates } = await this.session.query<{ oid: number; schema: string; name: string; relkind: string; partition: boolean; filtered: boolean }>(`
      SELECT c.oid::int AS oid, n.nspname AS schema, c.relname AS name, c.relkind, c.relispartition AS partition,
             row_security_active(c.oid) AS filtered
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE c.relkind IN ('r', 'p')
         AND n.nspname NOT IN ('pg_catalog', 'information_schema', '${LEDGER_SCHEMA}')
         AND n.nspname NOT LIKE 'pg\\_toast%'
         AND n.nspname NOT LIKE 'pg\\_temp\\_%'
         AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
       ORDER BY n.nspname, c.relname`);

    const rows = candidates.filter((row) => !row.partition);
    const missing = include.filter((wanted) => !rows.some((row) => sameTable(row, wanted)));
    if (missing.length) {
      throw new Error(`TABLES names table(s) not found in the source: ${missing.map(formatQualifiedName).join(', ')}`);
    }
    // EXCLUDE_TABLES usually keeps personal data out of lower environments: an entry that matches
    // nothing (a typo, the wrong case, a partition) would dump the very table it meant to keep out.
    const unmatched = exclude.filter((unwanted) => !rows.some((row) => sameTable(row, unwanted)));
    if (unmatched.length) {
      const partitions = unmatched.filter((unwanted) => candidates.some((row) => row.partition && sameTable(row, unwanted)));
      // A relation the dump would not take anyway (a view, a foreign table, an extension's table) is no mistake.
      const { rows: existing } = await this.session.query<{ schema: string; name: string }>(
        `SELECT n.nspname AS schema, c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE (n.nspname, c.relname) IN (SELECT * FROM unnest($1::text[], $2::text[]))`,
        [unmatched.map((t) => t.schema), unmatched.map((t) => t.name)],
      );
      const unknown = unmatched.filter((unwanted) => !partitions.includes(unwanted) && !existing.some((row) => sameTable(row, unwanted)));
      if (unknown.length || partitions.length) throw new Error(
        [
          unknown.length ? `EXCLUDE_TABLES names table(s) not found in the source (names are case-sensitive): ${unknown.map(formatQualifiedName).join(', ')}` : '',
          partitions.length ? `EXCLUDE_TABLES names partition(s), which travel with their partitioned table and cannot be left out alone: ${partitions.map(formatQualifiedName).join(', ')}` : '',
        ]
          .filter(Boolean)
          .join('; '),
      );
    }
    const selected = rows.filter(
      (row) => (include.length === 0 || include.some((t) => sameTable(row, t))) && !exclude.some((t) => sameTable(row, t)),
    );
    if (selected.length === 0) throw new Error('no tables selected for the snapshot (check TABLES and EXCLUDE_TABLES)');

    const { rows: sizes } = await this.session.query<{ oid: number; bytes: string }>(
      `SELECT c.oid::int AS oid,
              CASE WHEN c.relkind = 'p' THEN coalesce((SELECT sum(pg_relation_size(p.relid)) FROM pg_partition_tree(c.oid) p), 0)
                   ELSE pg_relation_size(c.oid) END::text AS bytes
         FROM pg_class c WHERE c.oid = ANY($1::oid[])`,
      [selected.map((row) => row.oid)],
    );
    const leaves = await partitionLeaves(
      this.session,
      selected.filter((row) => row.relkind === 'p').map((row) => row.oid),
    );
    const { rows: allColumns } = await this.session.query<{ oid: number; name: string }>(
      `SELECT attrelid::int AS oid, attname AS name FROM pg_attribute WHERE attrelid = ANY($1::oid[]) AND attnum > 0 AND NOT attisdropped ORDER BY attrelid, attnum`,
      [[...new Set(leaves.filter((leaf) => leaf.foreign).map((leaf) => leaf.root))]],
    );
    const { rows: columns } = await this.session.query<{ oid: number; name: string }>(
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
      bytes: Number(sizes.find((size) => size.oid === row.oid)?.bytes ?? 0),
      columns: columns.filter((c) => c.oid === row.oid).map((c) => c.name),
      filteredByPolicy: row.filtered,
      ...localPartitionsOf(row.oid, leaves, allColumns),
    }));
  }

  /**
   * ACCESS SHARE on the tables until the transaction ends, as pg_dump takes: a TRUNCATE or DROP in
   * production (which ignore MVCC snapshots) then waits for the dump instead of emptying a table
   * under it. `nowait` (parallel workers): fail at once with 55P03 rather than queue behind a DDL
   * that itself waits for the leader, a deadlock PostgreSQL could not see. An ordinary table is
   * locked ONLY, as it is read: without it LOCK recurses into inheritance children, which may be
   * left out of the dump and must not be waited for or held. A partitioned table's partitions are
   * read through it, so they are locked with it.
   */
  async lockTables(tables: Pick<SourceTable, 'schema' | 'name' | 'partitioned'>[], options: { nowait?: boolean } = {}): Promise<void> {
    const names = tables.map((table) => `${table.partitioned ? '' : 'ONLY '}${quoteQualified(table)}`);
    await this.session.query(`LOCK TABLE ${names.join(', ')} IN ACCESS SHARE MODE${options.nowait ? ' NOWAIT' : ''}`);
  }

  /**
   * Takes the transaction's snapshot, and says when. In REPEATABLE READ the snapshot is taken by
   * the first statement that is not BEGIN, SET, LOCK or SHOW, so this must be the transaction's
   * first query after its locks. now() would be the wrong instant: it is when BEGIN ran, before
   * the LOCK that may have waited (up to lock_timeout) while production kept committing, and that
   * data is in the snapshot. clock_timestamp() here is read microseconds after the snapshot was
   * taken, so every commit the snapshot holds happened before it, and two dumps order by it the
   * way their data does.
   */
  async takeSnapshot(): Promise<{ takenAt: string; role: string }> {
    const { rows } = await this.session.query<{ taken_at: Date; role: string }>('SELECT clock_timestamp() AS taken_at, current_user AS role');
    return { takenAt: rows[0].taken_at.toISOString(), role: rows[0].role };
  }

  /**
   * Every sequence that no table's column owns (serial, identity) and no table's column default
   * calls, in the schemas of the dumped tables, outside extensions and the ledger: the application's
   * own, one a trigger calls, where PostgreSQL records no dependency, and one a view's default calls
   * or a foreign table's column owns (those relations are never dumped, but pg_dump of a database
   * sets their sequences too, and an insert through the view lands in a dumped table). A table's
   * sequence goes with the table: a dumped one's is in `readSequences`; one EXCLUDE_TABLES leaves out
   * (or an extension's) keeps the environment's rows, so it keeps the environment's sequence too.
   * A schema EXCLUDE_TABLES empties is left out. Read like the others, right after the snapshot. One
   * the dump's role may not read is left out, and named in `unreadable`.
   */
  async readStandaloneSequences(tables: SourceTable[]): Promise<{ sequences: ManifestStandaloneSequence[]; unreadable: string[] }> {
    const { rows } = await this.session.query<{ schema: string; name: string; readable: boolean }>(
      `SELECT n.nspname AS schema, c.relname AS name, has_sequence_privilege(c.oid, 'SELECT') AS readable
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'S'
          AND n.nspname = ANY($1::text[])
          AND n.nspname NOT IN ('pg_catalog', 'information_schema', '${LEDGER_SCHEMA}')
          AND n.nspname NOT LIKE 'pg\\_toast%'
          AND n.nspname NOT LIKE 'pg\\_temp\\_%'
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
          AND NOT EXISTS (
                SELECT 1 FROM (
                  SELECT d.refobjid AS rel FROM pg_depend d
                   WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
                  UNION ALL
                  SELECT ad.adrelid FROM pg_depend d JOIN pg_attrdef ad ON ad.oid = d.objid
                   WHERE d.classid = 'pg_attrdef'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid = c.oid
                ) tied JOIN pg_class r ON r.oid = tied.rel
                -- A table or any partition (a foreign partition's travels with its partitioned table); not a view, not a foreign table.
                WHERE r.relkind IN ('r', 'p') OR r.relispartition)
        ORDER BY n.nspname, c.relname`,
      [[...new Set(tables.map((table) => table.schema))]],
    );
    const sequences: ManifestStandaloneSequence[] = [];
    const unreadable: string[] = [];
    for (const row of rows) {
      const name = formatQualifiedName(row);
      if (!row.readable) {
        unreadable.push(name);
        continue;
      }
      const { rows: values } = await this.session.query<{ last_value: string; is_called: boolean }>(
        `SELECT last_value::text AS last_value, is_called FROM ${quoteIdent(row.schema)}.${quoteIdent(row.name)}`,
      );
      sequences.push({ sequence: name, lastValue: values[0].last_value, isCalled: values[0].is_called });
    }
    return { sequences, unreadable };
  }

  /**
   * Every sequence the tables' rows draw from: owned by a column (serial, identity) or called by a
   * column's default (`nextval('...')`, which records a dependency of the default on the sequence;
   * pg_dump output often has sequences that no column owns). Partitions' own defaults count for
   * their parent. One entry per sequence, credited to the column that owns it where one does.
   *
   * Sequences are not transactional: a read returns the value at the moment of the read, not at the
   * snapshot. Read right after the snapshot was taken, it is at least every value the snapshot's
   * rows used (each was drawn before its row committed), and as close to the snapshot as it gets.
   */
  async readSequences(tables: SourceTable[]): Promise<ManifestSequence[]> {
    const { rows } = await this.session.query<{ seq_schema: string; seq_name: string; table_oid: number; column: string }>(
      `WITH dumped AS (
         SELECT t.oid AS root, t.oid AS rel FROM unnest($1::oid[]) AS t(oid)
         UNION
         SELECT t.oid, p.relid FROM unnest($1::oid[]) AS t(oid), pg_partition_tree(t.oid) AS p
       ), uses AS (
         SELECT d.objid AS seq, u.root, d.refobjid AS rel, d.refobjsubid AS attnum, true AS owned
           FROM pg_depend d JOIN dumped u ON u.rel = d.refobjid
          WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
            AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0
         UNION ALL
         SELECT d.refobjid, u.root, ad.adrelid, ad.adnum, false
           FROM pg_attrdef ad JOIN dumped u ON u.rel = ad.adrelid
           JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid AND d.refclassid = 'pg_class'::regclass
       )
       SELECT seq_schema, seq_name, table_oid, "column" FROM (
         SELECT DISTINCT ON (s.oid) sn.nspname AS seq_schema, s.relname AS seq_name, u.root::int AS table_oid, a.attname AS "column"
           FROM uses u
           JOIN pg_class s ON s.oid = u.seq AND s.relkind = 'S'
           JOIN pg_namespace sn ON sn.oid = s.relnamespace
           JOIN pg_attribute a ON a.attrelid = u.rel AND a.attnum = u.attnum
          ORDER BY s.oid, u.owned DESC, u.root, a.attnum
       ) found
       ORDER BY seq_schema, seq_name`,
      [tables.map((t) => t.oid)],
    );
    const sequences: ManifestSequence[] = [];
    for (const row of rows) {
      const table = tables.find((t) => t.oid === row.table_oid)!;
      const sequence = { schema: row.seq_schema, name: row.seq_name };
      const { rows: values } = await this.session.query<{ last_value: string; is_called: boolean }>(
        `SELECT last_value::text AS last_value, is_called FROM ${quoteIdent(sequence.schema)}.${quoteIdent(sequence.name)}`,
      );
      sequences.push({
        sequence: formatQualifiedName(sequence),
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
}
