import type { LoadDrift, ManifestSequence, ManifestTable } from '@app/common/contract';
import { formatIdent, parseQualifiedName, quoteIdent, quoteQualified } from '@app/common/database';
import { locateFailure } from '@app/common/observability';
import type { Queryable } from './database/queryable';
import { disableInsertRules, insertRules, restoreInsertRules } from './load/insert-rules';
import { findTargetTable, notATableMessage, TargetCatalog, TargetSchemaError, type TargetSequence, type TargetTable } from './target-schema';

/** SCHEMA_DRIFT: `fail` (an error naming what differs, nothing changes) or `common-columns`. */
export type SchemaDriftMode = 'fail' | 'common-columns';

export interface DriftTarget extends TargetTable {
  /** The snapshot columns this environment takes (all of them unless some are left out). */
  columns: string[];
  /** Snapshot columns the target lacks: the file goes through a staging table that drops them. */
  leftOut: string[];
  /**
   * The target's type of each column it takes, without its modifier (`pg_catalog.varchar`, not
   * `character varying(5)`): an explicit cast to a length truncates, where COPY refuses. A domain's
   * is its base type's, down the chain of domains: an explicit cast to a domain over varchar(5)
   * truncates too, where the assignment to the column applies its length and its checks.
   */
  types: Record<string, string>;
}

/**
 * The target tables a load writes, under SCHEMA_DRIFT. `fail` is the loader's old rule (every
 * snapshot table and column must exist). `common-columns` leaves out snapshot tables and columns
 * the target lacks, lets target columns the snapshot lacks take their defaults (a NOT NULL one
 * without a default, its own or its domain's, fails the load, named), and reports all of it. A
 * snapshot table whose name the target gives to a view (or a foreign table, ...) is a table the
 * target lacks: `fail` refuses it, naming what is there; common-columns skips it, as it skips one
 * dropped, and says what is there in `notTables` (for the log): loading it would write through the
 * view's rules into other tables, or into a foreign server.
 */
export async function resolveWithDrift(
  client: Queryable,
  tables: ManifestTable[],
  mode: SchemaDriftMode,
): Promise<{ targets: DriftTarget[]; drift?: LoadDrift; notTables?: string[] }> {
  if (mode === 'fail') {
    return { targets: (await new TargetCatalog(client).resolveTables(tables)).map((t) => ({ ...t, columns: t.manifest.columns, leftOut: [], types: {} })) };
  }
  const drift: LoadDrift = { skippedTables: [], leftOutColumns: [], defaultedColumns: [] };
  const problems: string[] = [];
  const targets: DriftTarget[] = [];
  const notTables: string[] = [];
  for (const table of tables) {
    const found = await findTargetTable(client, table);
    if (!found || found.notATable) {
      if (found?.notATable) notTables.push(notATableMessage(table, found.notATable));
      drift.skippedTables.push(table.name);
      continue;
    }
    const { oid } = found;
    // A column of a domain type takes the domain's own default where it has none (PostgreSQL reads
    // the column's type's typdefaultbin alone; CREATE DOMAIN copies its base domain's into it), and
    // any domain on the way may be NOT NULL (attnotnull does not show it). `type`: what a staged
    // text value is cast to before it is assigned to the column, below every domain and with no
    // length, so the assignment applies the column's length and its domains' checks (an explicit
    // cast of text to a varchar(5) domain cuts the value short). An array of such a domain needs
    // nothing of the kind: text is read into it by its input function, which refuses a long element.
    const { rows: columns } = await client.query<{ name: string; type: string; insertable: boolean; required: boolean }>(
      `WITH RECURSIVE chain(attnum, typid, not_null) AS (
         SELECT attnum, atttypid, false FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped
         UNION ALL
         SELECT chain.attnum, d.typbasetype, chain.not_null OR d.typnotnull FROM chain JOIN pg_type d ON d.oid = chain.typid AND d.typtype = 'd'
       )
       SELECT a.attname AS name, quote_ident(tn.nspname) || '.' || quote_ident(t.typname) AS type, a.attgenerated = '' AS insertable,
              (a.attnotnull OR chain.not_null) AND NOT a.atthasdef AND own.typdefaultbin IS NULL AND a.attidentity = '' AND a.attgenerated = '' AS required
         FROM pg_attribute a
         JOIN pg_type own ON own.oid = a.atttypid
         JOIN chain ON chain.attnum = a.attnum
         JOIN pg_type t ON t.oid = chain.typid AND t.typtype <> 'd'
         JOIN pg_namespace tn ON tn.oid = t.typnamespace
        WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`,
      [oid],
    );
    const insertable = new Set(columns.filter((c) => c.insertable).map((c) => c.name));
    const name = (column: string) => `${table.name}.${quoteIdent(column)}`;
    const leftOut = table.columns.filter((c) => !insertable.has(c));
    for (const column of columns.filter((c) => c.insertable && !table.columns.includes(c.name))) {
      if (column.required) problems.push(`${name(column.name)} is NOT NULL without a default and not in the snapshot`);
      else drift.defaultedColumns.push(name(column.name));
    }
    drift.leftOutColumns.push(...leftOut.map(name));
    const types = Object.fromEntries(columns.map((c) => [c.name, c.type]));
    targets.push({ oid, partitioned: found.partitioned, manifest: table, columns: table.columns.filter((c) => insertable.has(c)), leftOut, types });
  }
  if (problems.length) throw new TargetSchemaError(problems.join('; '));
  const drifted = drift.skippedTables.length + drift.leftOutColumns.length + drift.defaultedColumns.length > 0;
  return { targets, ...(drifted ? { drift } : {}), ...(notTables.length ? { notTables } : {}) };
}

/**
 * The manifest's sequences the load sets, under common-columns. The dump lists each sequence once,
 * credited to one column (its owner, else the oldest table's column whose default calls it): those
 * whose column the target loads are resolved as without drift (`credited`). A sequence credited to
 * a skipped table or a left-out column may still number a column the load fills with production's
 * values: one shared with a loaded table (both defaults call it), or moved to it before the
 * environment dropped the old table (`ALTER SEQUENCE ... OWNED BY orders.id`). Left unset, the
 * environment's next inserts would draw ids the load just wrote. So it is set, by its name
 * (`shared`), where the target has it and a loaded column there owns it or its default calls it;
 * else it numbers nothing the load wrote and is left unset, named (`unset`: the log and the drift).
 */
export async function sequencesToSet(
  client: Queryable,
  sequences: ManifestSequence[],
  targets: DriftTarget[],
  drift: LoadDrift | undefined,
): Promise<{ credited: ManifestSequence[]; shared: TargetSequence[]; unset: string[] }> {
  if (!drift) return { credited: sequences, shared: [], unset: [] };
  const skipped = new Set(drift.skippedTables);
  const leftOut = new Set(drift.leftOutColumns);
  const credited: ManifestSequence[] = [];
  const shared: TargetSequence[] = [];
  const unset: string[] = [];
  for (const sequence of sequences) {
    if (!skipped.has(sequence.table) && !leftOut.has(`${sequence.table}.${quoteIdent(sequence.column)}`)) {
      credited.push(sequence);
      continue;
    }
    // Manifests of earlier releases do not name the sequence: it cannot be found by name.
    const name = sequence.sequence ? await sequenceOfLoadedColumn(client, sequence.sequence, targets) : undefined;
    if (name) shared.push({ name, lastValue: sequence.lastValue, isCalled: sequence.isCalled });
    else unset.push(sequence.sequence ?? `the sequence of ${sequence.table}.${quoteIdent(sequence.column)}`);
  }
  return { credited, shared, unset };
}

/**
 * The target's sequence of production's name `sequence`, quoted, where a column the load fills
 * (one of `targets`' `columns`, in the table or one of its partitions) owns it or calls it in its
 * default; else undefined.
 */
async function sequenceOfLoadedColumn(client: Queryable, sequence: string, targets: DriftTarget[]): Promise<string | undefined> {
  const loaded = targets.flatMap((t) => t.columns.map((column) => ({ oid: t.oid, column })));
  const { rows } = await client.query<{ name: string }>(
    `WITH seq AS (
       SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = to_regclass($1) AND c.relkind = 'S'
     ), loaded(relid, attname) AS (
       SELECT l.root, l.attname FROM unnest($2::oid[], $3::text[]) AS l(root, attname)
       UNION
       SELECT tree.relid, l.attname FROM unnest($2::oid[], $3::text[]) AS l(root, attname), pg_partition_tree(l.root) tree
     ), uses(relid, attnum) AS (
       SELECT d.refobjid, d.refobjsubid FROM pg_depend d JOIN seq ON seq.oid = d.objid
        WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0
       UNION
       SELECT ad.adrelid, ad.adnum FROM pg_attrdef ad
         JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid AND d.refclassid = 'pg_class'::regclass
         JOIN seq ON seq.oid = d.refobjid
     )
     SELECT seq.name FROM seq
      WHERE EXISTS (SELECT 1 FROM uses JOIN pg_attribute a ON a.attrelid = uses.relid AND a.attnum = uses.attnum JOIN loaded ON loaded.relid = a.attrelid AND loaded.attname = a.attname)`,
    [quoteQualified(parseQualifiedName(sequence)), loaded.map((l) => l.oid), loaded.map((l) => l.column)],
  );
  return rows[0]?.name;
}

/** ` (a, b)`, or nothing for no columns: PostgreSQL refuses an empty list `()` in COPY and INSERT. */
const columnList = (columns: string[]) => (columns.length ? ` (${columns.join(', ')})` : '');

export interface StagedCopy {
  /** The temporary table, quoted. */
  staging: string;
  create: string;
  copy: string;
  insert: string;
}

/**
 * COPY of a file whose columns the target only partly has: into a temporary table holding every
 * snapshot column as text (the checksum is still verified on the file as it is), then the common
 * columns inserted, cast to the target's types. Returns the COPY statement and the INSERT to run after.
 * Also a file of no columns at all (a table whose columns were all dropped): its rows get the
 * target's defaults, as a COPY that could name no column would give them.
 */
export function stagedCopySql(target: DriftTarget): StagedCopy {
  const staging = quoteIdent(`db_fanout_drift_${target.oid}`);
  const all = target.manifest.columns.map(quoteIdent);
  const common = target.columns.map(quoteIdent);
  const table = quoteQualified({ schema: target.manifest.schema, name: target.manifest.table });
  return {
    staging,
    create: `CREATE TEMP TABLE ${staging} (${all.map((c) => `${c} text`).join(', ')}) ON COMMIT DROP`,
    copy: `COPY ${staging}${columnList(all)} FROM STDIN (FORMAT csv, HEADER)`,
    // Every value goes through the target column's input function, as COPY would have done, and
    // its modifier (a length, a precision) applies on assignment, so a value too long for the
    // column fails the load as COPY's would (an explicit cast to varchar(5) would cut it short);
    // production's value goes into a GENERATED ALWAYS identity column, as COPY puts it there too.
    insert: `INSERT INTO ${table}${columnList(common)} OVERRIDING SYSTEM VALUE SELECT ${target.columns.map((c) => `CAST(${quoteIdent(c)} AS ${target.types[c]})`).join(', ')} FROM ${staging}`,
  };
}

/**
 * The staged INSERT of `stagedCopySql`, of the `stagedRows` the COPY put in the staging table. It
 * takes the rows as COPY would: the table's INSERT rules (CREATE RULE), which COPY ignores, are off
 * for it (see `disableInsertRules`), and it must write every staged row into the table, or the load
 * fails (a BEFORE trigger firing under LOAD_TRIGGERS=fire may skip one, as it would in a COPY).
 * PostgreSQL names no table or column for a value that fails there (a COPY's CONTEXT names both): a
 * failure is marked with the table and, where the values of one column fail alone with the same
 * SQLSTATE, that column (see `failingColumn`). The error thrown is PostgreSQL's own (its SQLSTATE,
 * its message, its DETAIL), and the caller rolls the load's transaction back as for any failure.
 */
export async function insertStaged(client: Queryable, target: DriftTarget, staged: StagedCopy, stagedRows: number): Promise<void> {
  const rules = await insertRules(client, target.oid);
  await disableInsertRules(client, rules);
  await client.query('SAVEPOINT db_fanout_drift_insert');
  let inserted: number | null;
  try {
    inserted = (await client.query(staged.insert)).rowCount;
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    // Data exceptions (class 22) and a domain's NOT NULL or CHECK (class 23) can be one column's values.
    const column = typeof code === 'string' && /^2[23]/.test(code) ? await failingColumn(client, target, staged, code).catch(() => undefined) : undefined;
    throw locateFailure(error, `table ${target.manifest.name}${column === undefined ? '' : `, column ${formatIdent(column)}`}`);
  }
  await client.query('RELEASE SAVEPOINT db_fanout_drift_insert');
  if (inserted !== stagedRows) {
    throw new TargetSchemaError(`the INSERT from the staging table wrote ${inserted ?? 0} of its ${stagedRows} rows into ${target.manifest.name}`);
  }
  await restoreInsertRules(client, rules);
}

/**
 * The column whose staged values fail with `code`, looked for only after the INSERT failed: the
 * columns are cast into a throwaway table of their exact types (a length, a precision applies on
 * assignment there as in the INSERT), all of them first (none failing: the failure was no column's
 * values, a table's CHECK), then halving the candidates, the first half first: 1 + log2(columns)
 * scans of the staging table while the load holds its locks, not one per column. Each probe runs in
 * a savepoint, rolled back.
 */
async function failingColumn(client: Queryable, target: DriftTarget, staged: StagedCopy, code: string): Promise<string | undefined> {
  await client.query('ROLLBACK TO SAVEPOINT db_fanout_drift_insert');
  const { rows } = await client.query<{ name: string; type: string }>(
    `SELECT attname AS name, format_type(atttypid, atttypmod) AS type FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped`,
    [target.oid],
  );
  const exactTypes = new Map(rows.map((r) => [r.name, r.type]));
  let candidates = target.columns.filter((c) => exactTypes.has(c));
  const fails = async (columns: string[]): Promise<boolean> => {
    await client.query('SAVEPOINT db_fanout_drift_probe');
    try {
      await client.query(`CREATE TEMP TABLE db_fanout_drift_probe (${columns.map((c, i) => `v${i} ${exactTypes.get(c)}`).join(', ')}) ON COMMIT DROP`);
      await client.query(`INSERT INTO db_fanout_drift_probe SELECT ${columns.map((c) => `CAST(${quoteIdent(c)} AS ${target.types[c]})`).join(', ')} FROM ${staged.staging}`);
      return false;
    } catch (error) {
      return (error as { code?: unknown }).code === code;
    } finally {
      await client.query('ROLLBACK TO SAVEPOINT db_fanout_drift_probe');
    }
  };
  if (candidates.length === 0 || !(await fails(candidates))) return undefined;
  while (candidates.length > 1) {
    const first = candidates.slice(0, Math.ceil(candidates.length / 2));
    // Each column's values are cast on their own: when the first half does not fail, the second does.
    candidates = (await fails(first)) ? first : candidates.slice(first.length);
  }
  return candidates[0];
}
