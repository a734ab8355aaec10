import { type ManifestSequence, type ManifestStandaloneSequence, type ManifestTable } from '@app/common/contract';
import { parseQualifiedName, quoteIdent, quoteQualified } from '@app/common/database';
import type { Queryable } from './database/queryable';

/** The target's schema does not fit the snapshot: a permanent failure naming what is missing. */
export class TargetSchemaError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TargetSchemaError';
  }
}

/**
 * A table outside the snapshot references a row the snapshot does not have: found before anything
 * is truncated. The example key goes into `detail` (as PostgreSQL's own foreign key error does), so
 * events only show it with ERROR_DETAIL=true.
 */
export class DanglingReferenceError extends TargetSchemaError {
  readonly code = '23503';
  constructor(
    message: string,
    readonly detail: string,
  ) {
    super(message);
    this.name = 'DanglingReferenceError';
  }
}

export interface TargetTable {
  oid: number;
  partitioned: boolean;
  manifest: ManifestTable;
}

/** What the target has at a snapshot table's name that is no table, said in its messages. */
const NOT_A_TABLE: Readonly<Record<string, string>> = {
  v: 'a view',
  m: 'a materialized view',
  f: 'a foreign table',
  S: 'a sequence',
  c: 'a composite type',
  i: 'an index',
  I: 'a partitioned index',
  t: 'a TOAST table',
};

/**
 * The target's table for a snapshot table, by its schema-qualified name, or undefined when it has
 * none. Where the name is some other relation (a view, a foreign table: to_regclass finds any),
 * `notATable` says what it is: the load never writes through it (a view's rules or a foreign
 * server would take production's rows elsewhere), and PostgreSQL's own refusal (42809, `"users"
 * is not a table`) would name neither the schema nor what is there.
 */
export async function findTargetTable(client: Queryable, table: ManifestTable): Promise<{ oid: number; partitioned: boolean; notATable?: string } | undefined> {
  const { rows } = await client.query<{ oid: number | null; relkind: string }>('SELECT c.oid::int AS oid, c.relkind::text AS relkind FROM pg_class c WHERE c.oid = to_regclass($1)', [
    quoteQualified({ schema: table.schema, name: table.table }),
  ]);
  const row = rows[0];
  if (!row?.oid) return undefined;
  const partitioned = row.relkind === 'p';
  if (row.relkind === 'r' || partitioned) return { oid: row.oid, partitioned };
  return { oid: row.oid, partitioned, notATable: NOT_A_TABLE[row.relkind] ?? `a relation of kind ${row.relkind}` };
}

/** `public.users is a view in the target, not a table`. */
export function notATableMessage(table: ManifestTable, kind: string): string {
  return `${table.name} is ${kind} in the target, not a table`;
}

/**
 * The target schema belongs to the environment; the loader never creates or alters tables.
 * Every snapshot table and column must exist there, or the load fails naming all that is missing.
 */
async function resolveTargetTables(client: Queryable, tables: ManifestTable[]): Promise<TargetTable[]> {
  const problems: string[] = [];
  const resolved: TargetTable[] = [];
  for (const table of tables) {
    const found = await findTargetTable(client, table);
    if (!found) {
      problems.push(`table ${table.name} does not exist in the target`);
      continue;
    }
    if (found.notATable) {
      problems.push(notATableMessage(table, found.notATable));
      continue;
    }
    const { oid } = found;
    const { rows: columns } = await client.query<{ name: string; generated: boolean }>(
      `SELECT attname AS name, attgenerated <> '' AS generated FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped`,
      [oid],
    );
    const generated = new Set(columns.filter((c) => c.generated).map((c) => c.name));
    const insertable = new Set(columns.filter((c) => !c.generated).map((c) => c.name));
    const named = (names: string[]) => names.map((c) => `${table.name}.${quoteIdent(c)}`).join(', ');
    // A column the environment computes (GENERATED) is there, but takes no value: said so, not "missing".
    const computed = table.columns.filter((c) => generated.has(c));
    const missing = table.columns.filter((c) => !insertable.has(c) && !generated.has(c));
    if (missing.length) problems.push(`column(s) ${named(missing)} missing in the target`);
    if (computed.length) problems.push(`column(s) ${named(computed)} generated in the target, where production stores their values`);
    if (missing.length || computed.length) continue;
    resolved.push({ oid, partitioned: found.partitioned, manifest: table });
  }
  if (problems.length) throw new TargetSchemaError(problems.join('; '));
  return resolved;
}

export interface ForeignKey {
  table: string;
  name: string;
  definition: string;
  comment: string | null;
}

export interface IndexDefinition {
  /** The index's (and its table's) schema, unquoted. */
  schema: string;
  /** The table, quoted. */
  table: string;
  /** The index's own name (for a key, the constraint's name is `constraintName`). */
  name: string;
  /** `CREATE [UNIQUE] INDEX ...` as pg_get_indexdef gives it: storage parameters, INCLUDE and WHERE included. */
  indexDefinition: string;
  /** The tablespace the index lives in, '' for the database's default (pg_get_indexdef leaves it out). */
  tablespace: string;
  clustered: boolean;
  indexComment: string | null;
  /** `ALTER INDEX ... ALTER COLUMN n SET STATISTICS t` given to its expression columns (pg_get_indexdef leaves them out). */
  statistics: { column: number; target: number }[];
  /** Set for indexes that back a PRIMARY KEY or UNIQUE constraint. */
  constraint?: { name: string; type: 'PRIMARY KEY' | 'UNIQUE'; deferrable: boolean; deferred: boolean; comment: string | null };
}

export interface UserTrigger {
  /** The table (or partition) the trigger is on, quoted. */
  table: string;
  name: string;
  /** pg_trigger.tgenabled: O (origin, the default), R (replica), A (always); disabled ones (D) are not listed. */
  state: 'O' | 'R' | 'A';
}

export interface TargetSequence {
  /** The target's sequence, quoted. */
  name: string;
  lastValue: string;
  isCalled: boolean;
}

/** A foreign key from a table outside the snapshot to a snapshot table. */
export interface ForeignKeyFromOutside {
  name: string;
  /** The referencing table, quoted, and whether it is partitioned (then its partitions are read too). */
  table: string;
  partitioned: boolean;
  columns: string[];
  referenced: TargetTable;
  referencedColumns: string[];
}

/** The target's catalog as a load sees it, read through the load's own client (inside its transaction). */
export class TargetCatalog {
  constructor(private readonly db: Queryable) {}

  /**
   * The target schema belongs to the environment; the loader never creates or alters tables.
   * Every snapshot table and column must exist there, or the load fails naming all that is missing.
   */
  resolveTables(tables: ManifestTable[]): Promise<TargetTable[]> {
    return resolveTargetTables(this.db, tables);
  }

  /**
   * Foreign keys on, or pointing at, the snapshot's tables. They are dropped for the load and
   * re-added (and so fully re-validated) before commit: load order stops mattering, cycles and
   * self-references work, and every constraint still holds once the transaction commits.
   */
  async foreignKeysTouching(tableOids: number[]): Promise<ForeignKey[]> {
    const { rows } = await this.db.query<{ schema: string; table: string; name: string; definition: string; comment: string | null }>(
      `SELECT n.nspname AS schema, c.relname AS table, con.conname AS name, pg_get_constraintdef(con.oid) AS definition,
              obj_description(con.oid, 'pg_constraint') AS comment
         FROM pg_constraint con
         JOIN pg_class c ON c.oid = con.conrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE con.contype = 'f' AND con.conparentid = 0
          AND (con.conrelid = ANY($1::oid[]) OR con.confrelid = ANY($1::oid[]))
        ORDER BY 1, 2, 3`,
      [tableOids],
    );
    return rows.map((row) => ({ table: quoteQualified({ schema: row.schema, name: row.table }), name: row.name, definition: row.definition, comment: row.comment }));
  }

  /**
   * Validated foreign keys that reference a snapshot table from a table outside the snapshot (and
   * outside the snapshot tables' partitions): their rows stay, so the snapshot must still hold what
   * they reference.
   */
  async foreignKeysFromOutside(targets: TargetTable[]): Promise<ForeignKeyFromOutside[]> {
    const { rows } = await this.db.query<{ name: string; table: string; partitioned: boolean; referenced: number; columns: string[]; referenced_columns: string[] }>(
      `WITH snapshot AS (SELECT r.oid AS relid FROM unnest($1::oid[]) r(oid) UNION SELECT tree.relid FROM unnest($1::oid[]) r(oid), pg_partition_tree(r.oid) tree)
       SELECT con.conname AS name, quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS table, c.relkind = 'p' AS partitioned,
              con.confrelid::int AS referenced,
              (SELECT array_agg(a.attname ORDER BY k.i) FROM unnest(con.conkey) WITH ORDINALITY k(n, i) JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n)::text[] AS columns,
              (SELECT array_agg(a.attname ORDER BY k.i) FROM unnest(con.confkey) WITH ORDINALITY k(n, i) JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n)::text[] AS referenced_columns
         FROM pg_constraint con
         JOIN pg_class c ON c.oid = con.conrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE con.contype = 'f' AND con.conparentid = 0
          -- A NOT VALID key never promised its old rows a match; it is re-added NOT VALID.
          AND con.convalidated
          AND con.confrelid = ANY($1::oid[])
          AND con.conrelid NOT IN (SELECT relid FROM snapshot)
        ORDER BY 2, 1`,
      [targets.map((t) => t.oid)],
    );
    return rows.map((row) => ({
      name: row.name,
      table: row.table,
      partitioned: row.partitioned,
      columns: row.columns,
      referenced: targets.find((t) => t.oid === row.referenced)!,
      referencedColumns: row.referenced_columns,
    }));
  }

  /**
   * Indexes (and the primary keys and unique constraints they back) of ordinary snapshot tables, to
   * drop before the load and build once after it: one sort per index instead of a b-tree insert per
   * row. Indexes used as replica identity stay, exclusion constraints stay (they cannot be re-added
   * from an index), and so do the indexes of partitioned tables (their definitions cannot be
   * replayed on the parent alone). An invalid index (a failed CREATE INDEX CONCURRENTLY) stays as it
   * is: built again it would turn valid and start enforcing, or fail the load on a duplicate, where
   * pg_dump leaves it out and the environment's owner decides.
   */
  async deferrableIndexes(tables: TargetTable[]): Promise<IndexDefinition[]> {
    const oids = tables.filter((t) => !t.partitioned).map((t) => t.oid);
    const { rows } = await this.db.query<{
      schema: string;
      table: string;
      name: string;
      definition: string;
      tablespace: string | null;
      clustered: boolean;
      index_comment: string | null;
      statistics: string[];
      constraint_name: string | null;
      constraint_type: 'p' | 'u' | null;
      deferrable: boolean | null;
      deferred: boolean | null;
      constraint_comment: string | null;
    }>(
      `SELECT n.nspname AS schema, c.relname AS table, ic.relname AS name, pg_get_indexdef(i.indexrelid) AS definition,
              ts.spcname AS tablespace, i.indisclustered AS clustered, obj_description(i.indexrelid, 'pg_class') AS index_comment,
              array(SELECT a.attnum || ':' || a.attstattarget FROM pg_attribute a
                     WHERE a.attrelid = i.indexrelid AND a.attstattarget >= 0 ORDER BY a.attnum)::text[] AS statistics,
              con.conname AS constraint_name, con.contype AS constraint_type, con.condeferrable AS deferrable, con.condeferred AS deferred,
              obj_description(con.oid, 'pg_constraint') AS constraint_comment
         FROM pg_index i
         JOIN pg_class ic ON ic.oid = i.indexrelid
         LEFT JOIN pg_tablespace ts ON ts.oid = ic.reltablespace
         JOIN pg_class c ON c.oid = i.indrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u', 'x')
        WHERE i.indrelid = ANY($1::oid[]) AND NOT i.indisreplident AND con.contype IS DISTINCT FROM 'x' AND i.indisvalid
        ORDER BY con.oid IS NULL, 1, 2, 3`,
      [oids],
    );
    return rows.map((row) => ({
      schema: row.schema,
      table: quoteQualified({ schema: row.schema, name: row.table }),
      name: row.name,
      indexDefinition: row.definition,
      tablespace: row.tablespace ?? '',
      clustered: row.clustered,
      indexComment: row.index_comment,
      statistics: row.statistics.map((entry) => {
        const [column, target] = entry.split(':').map(Number);
        return { column, target };
      }),
      constraint: row.constraint_name
        ? {
            name: row.constraint_name,
            type: row.constraint_type === 'p' ? 'PRIMARY KEY' : 'UNIQUE',
            deferrable: row.deferrable === true,
            deferred: row.deferred === true,
            comment: row.constraint_comment,
          }
        : undefined,
    }));
  }

  /**
   * The environment's own enabled triggers on the snapshot tables and their partitions (internal
   * ones, such as those enforcing foreign keys, are not user triggers and are left alone).
   */
  async userTriggers(tableOids: number[]): Promise<UserTrigger[]> {
    const { rows } = await this.db.query<UserTrigger>(
      `SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS table, t.tgname AS name, t.tgenabled::text AS state
         FROM (SELECT r.oid AS relid FROM unnest($1::oid[]) r(oid) UNION SELECT tree.relid FROM unnest($1::oid[]) r(oid), pg_partition_tree(r.oid) tree) tree
         JOIN pg_trigger t ON t.tgrelid = tree.relid
         JOIN pg_class c ON c.oid = t.tgrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT t.tgisinternal AND t.tgenabled <> 'D'
        ORDER BY 1, 2`,
      [tableOids],
    );
    return rows;
  }

  /**
   * Populated materialized views that read the snapshot tables, directly or through views and other
   * materialized views, in an order that refreshes every one after those it reads. Those that call
   * a function written in the database (not pg_catalog's, not an extension's, not C) count too, if
   * the loader's role owns them (REFRESH needs it): a function's body is not a recorded
   * dependency, and it may read the tables (pg_restore refreshes every one).
   */
  async dependentMaterializedViews(tableOids: number[]): Promise<string[]> {
    const { rows } = await this.db.query<{ name: string }>(
      `WITH RECURSIVE readers(oid, depth) AS (
         SELECT tree.relid, 0 FROM (SELECT r.oid AS relid FROM unnest($1::oid[]) r(oid) UNION SELECT tree.relid FROM unnest($1::oid[]) r(oid), pg_partition_tree(r.oid) tree) tree
         UNION ALL
         -- After every view found through dependencies (depth 64 at most): the function may read those.
         SELECT rw.ev_class, 65
           FROM pg_rewrite rw
           JOIN pg_class mv ON mv.oid = rw.ev_class AND pg_has_role(mv.relowner, 'USAGE')
           JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = rw.oid AND d.refclassid = 'pg_proc'::regclass
           JOIN pg_proc p ON p.oid = d.refobjid JOIN pg_namespace pn ON pn.oid = p.pronamespace
           JOIN pg_language l ON l.oid = p.prolang
          WHERE pn.nspname NOT IN ('pg_catalog', 'information_schema') AND l.lanname NOT IN ('c', 'internal')
            AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_proc'::regclass AND e.objid = p.oid AND e.deptype = 'e')
         UNION ALL
         SELECT rw.ev_class, readers.depth + 1
           FROM readers
           JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = readers.oid AND d.classid = 'pg_rewrite'::regclass
           JOIN pg_rewrite rw ON rw.oid = d.objid
          WHERE rw.ev_class <> readers.oid AND readers.depth < 128
       )
       SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name
         FROM readers JOIN pg_class c ON c.oid = readers.oid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'm' AND c.relispopulated
        GROUP BY 1 ORDER BY max(readers.depth), 1`,
      [tableOids],
    );
    return rows.map((r) => r.name);
  }

  /**
   * Production's standalone sequences (no dumped table's column owns or calls them: the
   * application's, a trigger's, a view default's, a foreign table's), found in the target by their
   * name. Returned apart: those the target lacks, and those the loader's role does not own (setting
   * one needs its owner: a foreign table's belongs to whoever may use the server, often not the
   * loader). The caller leaves both unset, saying so: they are no loaded table's data.
   */
  async resolveStandaloneSequences(sequences: ManifestStandaloneSequence[]): Promise<{ resolved: TargetSequence[]; missing: string[]; notOwned: string[] }> {
    const resolved: TargetSequence[] = [];
    const missing: string[] = [];
    const notOwned: string[] = [];
    for (const sequence of sequences) {
      const { rows } = await this.db.query<{ name: string; owned: boolean }>(
        `SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name, pg_has_role(c.relowner, 'USAGE') AS owned
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.oid = to_regclass($1) AND c.relkind = 'S'`,
        [quoteQualified(parseQualifiedName(sequence.sequence))],
      );
      if (!rows[0]) missing.push(sequence.sequence);
      else if (!rows[0].owned) notOwned.push(rows[0].name);
      else resolved.push({ name: rows[0].name, lastValue: sequence.lastValue, isCalled: sequence.isCalled });
    }
    return { resolved, missing, notOwned };
  }

  /**
   * The target's sequence for each of production's (see `targetSequenceOf`). Every sequence must be
   * found, or the load fails naming those missing. Two of production's that land on one target
   * sequence (a serial migrated to identity keeps its old sequence, owned by the same column, and
   * the environment has only one of them; a partition's own serial the environment lacks): the
   * manifest does not say which of the two the column draws from in production, so the target's
   * takes the one further along. Whichever production used, the next insert continues after every
   * loaded row it numbered (the one listed last, which used to win, could be the old serial's 1,
   * and the next insert collided).
   */
  async resolveSequences(sequences: ManifestSequence[]): Promise<TargetSequence[]> {
    const problems: string[] = [];
    const claimed = new Map<string, ManifestSequence>();
    for (const sequence of sequences) {
      const name = await this.targetSequenceOf(sequence);
      const other = name ? claimed.get(name) : undefined;
      if (!name) problems.push(sequence.sequence ? `sequence ${sequence.sequence} does not exist in the target` : `column ${columnOf(sequence)} owns no sequence in the target`);
      else if (!other || nextValueOf(sequence) > nextValueOf(other)) claimed.set(name, sequence);
    }
    if (problems.length) throw new TargetSchemaError(problems.join('; '));
    return [...claimed].map(([name, { lastValue, isCalled }]) => ({ name, lastValue, isCalled }));
  }

  /**
   * Production's sequence in the target, quoted, or null. First the sequence of production's name
   * where it is tied to the loaded column there (owned by it, or called by its default, in the table
   * or one of its partitions): a column can have two (a serial migrated to identity still owns its
   * old sequence; a partition attached with its own), and each is production's own. Else the one
   * the column draws from in the target (a table renamed in production keeps its old sequence name;
   * one built from a schema file has the new). Else, where the column draws from none (a sequence
   * of app code), the sequence of production's name.
   */
  private async targetSequenceOf(sequence: ManifestSequence): Promise<string | null> {
    const table = quoteQualified({ schema: sequence.schema, name: sequence.tableName });
    const { rows } = await this.db.query<{ name: string | null }>(
      `WITH tree(relid) AS (
         SELECT to_regclass($1::text) UNION SELECT relid FROM pg_partition_tree(to_regclass($1::text))
       ), columns AS (
         SELECT a.attrelid, a.attnum FROM pg_attribute a JOIN tree ON tree.relid = a.attrelid WHERE a.attname = $2::text AND NOT a.attisdropped
       ), tied(oid) AS (
         SELECT d.objid FROM pg_depend d JOIN columns c ON c.attrelid = d.refobjid AND c.attnum = d.refobjsubid
          WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
         UNION
         SELECT d.refobjid FROM pg_attrdef ad JOIN columns c ON c.attrelid = ad.adrelid AND c.attnum = ad.adnum
           JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid AND d.refclassid = 'pg_class'::regclass
       ), named AS (
         SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.oid = to_regclass($3::text) AND c.relkind = 'S'
       )
       SELECT coalesce(
                (SELECT name FROM named WHERE oid IN (SELECT oid FROM tied)),
                pg_get_serial_sequence($1::text, $2::text),
                (SELECT quote_ident(n.nspname) || '.' || quote_ident(s.relname)
                   FROM pg_attribute a
                   JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
                   JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid AND d.refclassid = 'pg_class'::regclass
                   JOIN pg_class s ON s.oid = d.refobjid AND s.relkind = 'S'
                   JOIN pg_namespace n ON n.oid = s.relnamespace
                  WHERE a.attrelid = to_regclass($1::text) AND a.attname = $2::text
                  ORDER BY s.oid LIMIT 1),
                (SELECT name FROM named)) AS name`,
      [table, sequence.column, sequence.sequence ? quoteQualified(parseQualifiedName(sequence.sequence)) : null],
    );
    return rows[0]?.name ?? null;
  }
}

function columnOf(sequence: ManifestSequence): string {
  return `${sequence.table}.${quoteIdent(sequence.column)}`;
}

/** The value a sequence hands out next (its increment taken as positive, as serial and identity default to). */
function nextValueOf(sequence: ManifestSequence): bigint {
  return BigInt(sequence.lastValue) + (sequence.isCalled ? 1n : 0n);
}
