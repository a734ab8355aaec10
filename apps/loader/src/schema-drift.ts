import type { LoadDrift, ManifestSequence, ManifestTable } from '@app/common/contract';
import { quoteIdent, quoteQualified } from '@app/common/database';
import type { Queryable } from './database/queryable';
import { findTargetTable, TargetCatalog, TargetSchemaError, type TargetTable } from './target-schema';

/** SCHEMA_DRIFT: `fail` (an error naming what differs, nothing changes) or `common-columns`. */
export type SchemaDriftMode = 'fail' | 'common-columns';

export interface DriftTarget extends TargetTable {
  /** The snapshot columns this environment takes (all of them unless some are left out). */
  columns: string[];
  /** Snapshot columns the target lacks: the file goes through a staging table that drops them. */
  leftOut: string[];
  /**
   * The target's type of each column it takes, without its modifier (`pg_catalog.varchar`, not
   * `character varying(5)`): an explicit cast to a length truncates, where COPY refuses.
   */
  types: Record<string, string>;
}

/**
 * The target tables a load writes, under SCHEMA_DRIFT. `fail` is the loader's old rule (every
 * snapshot table and column must exist). `common-columns` leaves out snapshot tables and columns
 * the target lacks, lets target columns the snapshot lacks take their defaults (a NOT NULL one
 * without a default fails the load, named), and reports all of it.
 */
export async function resolveWithDrift(client: Queryable, tables: ManifestTable[], mode: SchemaDriftMode): Promise<{ targets: DriftTarget[]; drift?: LoadDrift }> {
  if (mode === 'fail') {
    return { targets: (await new TargetCatalog(client).resolveTables(tables)).map((t) => ({ ...t, columns: t.manifest.columns, leftOut: [], types: {} })) };
  }
  const drift: LoadDrift = { skippedTables: [], leftOutColumns: [], defaultedColumns: [] };
  const problems: string[] = [];
  const targets: DriftTarget[] = [];
  for (const table of tables) {
    const found = await findTargetTable(client, table);
    if (!found) {
      drift.skippedTables.push(table.name);
      continue;
    }
    const { oid } = found;
    const { rows: columns } = await client.query<{ name: string; type: string; insertable: boolean; required: boolean }>(
      `SELECT attname AS name, quote_ident(tn.nspname) || '.' || quote_ident(t.typname) AS type, attgenerated = '' AS insertable,
              attnotnull AND NOT atthasdef AND attidentity = '' AND attgenerated = '' AS required
         FROM pg_attribute JOIN pg_type t ON t.oid = atttypid JOIN pg_namespace tn ON tn.oid = t.typnamespace
        WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum`,
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
  return { targets, ...(drifted ? { drift } : {}) };
}

/**
 * The manifest's sequences the load sets: under common-columns, not those of a skipped table or a
 * left-out column (the environment lacks what they number; a sequence another loaded column also
 * uses has an entry of its own and is still set).
 */
export function sequencesToSet(sequences: ManifestSequence[], drift: LoadDrift | undefined): ManifestSequence[] {
  if (!drift) return sequences;
  const skipped = new Set(drift.skippedTables);
  const leftOut = new Set(drift.leftOutColumns);
  return sequences.filter((s) => !skipped.has(s.table) && !leftOut.has(`${s.table}.${quoteIdent(s.column)}`));
}

/** ` (a, b)`, or nothing for no columns: PostgreSQL refuses an empty list `()` in COPY and INSERT. */
const columnList = (columns: string[]) => (columns.length ? ` (${columns.join(', ')})` : '');

/**
 * COPY of a file whose columns the target only partly has: into a temporary table holding every
 * snapshot column as text (the checksum is still verified on the file as it is), then the common
 * columns inserted, cast to the target's types. Returns the COPY statement and the INSERT to run after.
 * Also a file of no columns at all (a table whose columns were all dropped): its rows get the
 * target's defaults, as a COPY that could name no column would give them.
 */
export function stagedCopySql(target: DriftTarget): { copy: string; create: string; insert: string } {
  const staging = quoteIdent(`db_fanout_drift_${target.oid}`);
  const all = target.manifest.columns.map(quoteIdent);
  const common = target.columns.map(quoteIdent);
  const table = quoteQualified({ schema: target.manifest.schema, name: target.manifest.table });
  return {
    create: `CREATE TEMP TABLE ${staging} (${all.map((c) => `${c} text`).join(', ')}) ON COMMIT DROP`,
    copy: `COPY ${staging}${columnList(all)} FROM STDIN (FORMAT csv, HEADER)`,
    // Every value goes through the target column's input function, as COPY would have done, and
    // its modifier (a length, a precision) applies on assignment, so a value too long for the
    // column fails the load as COPY's would (an explicit cast to varchar(5) would cut it short);
    // production's value goes into a GENERATED ALWAYS identity column, as COPY puts it there too.
    insert: `INSERT INTO ${table}${columnList(common)} OVERRIDING SYSTEM VALUE SELECT ${target.columns.map((c) => `CAST(${quoteIdent(c)} AS ${target.types[c]})`).join(', ')} FROM ${staging}`,
  };
}
