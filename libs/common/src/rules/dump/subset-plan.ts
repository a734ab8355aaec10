import type { ClientBase } from 'pg';
import { quoteIdent, quoteQualified } from '../../database';
import { describeFailure, quotesRowValue } from '../../observability/failure';
import { type CatalogColumn, columnKey, RulesError, type RulesCatalog, type RulesFile, type TableName, tableKey } from '..';
import { quoteLiteral } from './masking-sql';

/** A reference between two dumped tables: a declared foreign key (possibly composite) or a `relations` entry. */
interface Edge {
  from: TableName;
  fromColumns: string[];
  to: TableName;
  toColumns: string[];
  /**
   * Per column, the type a referencing value is cast to before it is compared (see comparedAs);
   * undefined where it is compared as it is.
   */
  casts: (string | undefined)[];
  /**
   * The referenced columns' collations, put on the comparison: two columns of different collations
   * cannot be compared as they are (42P22), and a key is looked up under the referenced column's.
   */
  toCollations: (string | null)[];
}

/** Per restricted table, the rows kept, by ctid: valid for every connection sharing the dump's snapshot. */
export type SubsetPlan = Map<string, string[]>;

const same = (a: TableName, b: TableName) => a.schema === b.schema && a.name === b.name;

/** A column of the catalog, by its table and name. */
const columnIn = (catalog: RulesCatalog, table: TableName, column: string) => catalog.tables.find((c) => same(c, table))?.columns.find((c) => c.name === column);

async function edgesBetween(client: ClientBase, catalog: RulesCatalog, rules: RulesFile, dumped: TableName[]): Promise<Edge[]> {
  const isDumped = (t: TableName) => dumped.some((d) => same(d, t));
  const columnOf = (t: TableName, column: string) => columnIn(catalog, t, column)!;
  const edges = [
    ...catalog.foreignKeys.map((fk) => ({ from: fk.from, fromColumns: fk.fromColumns, to: fk.to, toColumns: fk.toColumns })),
    ...rules.relations.map((r) => ({ from: r.from, fromColumns: [r.from.column], to: r.to, toColumns: [r.to.column] })),
  ].filter((e) => isDumped(e.from) && isDumped(e.to));
  const castTo = await baseTypes(
    client,
    edges.flatMap((e) => e.toColumns.map((column) => ({ ...e.to, column }))),
  );
  return edges.map((e) => ({
    ...e,
    casts: e.fromColumns.map((c, i) => (comparedAs(columnOf(e.from, c), columnOf(e.to, e.toColumns[i])) === 'cast' ? castTo.get(columnKey({ ...e.to, column: e.toColumns[i] })) : undefined)),
    toCollations: e.toColumns.map((c) => columnOf(e.to, c).collation),
  }));
}

/**
 * How a referencing column is compared with the column it references. Of one type (a `varchar(40)`
 * and a `varchar(5)`, a domain and its type), or both numbers (an integer key and a numeric column
 * holding ids) or both dates and times, as they are: PostgreSQL compares them exactly, where a
 * cast to the referenced column's type cut 'alice@example.org' to a `varchar(5)` login 'alice',
 * rounded 1.5 to the integer 2, truncated a timestamp to its day, or failed on 10000000000 (out of
 * range for an integer), matching a row the value does not name. Otherwise the referencing value is
 * cast to the referenced column's type, without its modifier and below its domains (see baseTypes):
 * text to citext compares as the citext key does, case-insensitively; text holding ids converts to
 * the integer or uuid key (a value that does not is refused first: unconvertibleRelations).
 */
function comparedAs(from: CatalogColumn, to: CatalogColumn): 'as is' | 'cast' {
  if (from.baseType === to.baseType) return 'as is';
  if (from.category === to.category && (to.category === 'N' || to.category === 'D')) return 'as is';
  return 'cast';
}

/**
 * The type under each column's domains, as PostgreSQL writes it without a modifier
 * (`character varying`, `numeric`, `citext`), by columnKey. format_type(type, -1), not NULL: with
 * NULL a char(n) is written `character`, which a cast reads as char(1); with -1 it is `bpchar`.
 * Below the domains: a cast to a domain would check its CHECK on values that need only be compared.
 */
async function baseTypes(client: ClientBase, columns: (TableName & { column: string })[]): Promise<Map<string, string>> {
  if (!columns.length) return new Map();
  const { rows } = await client.query<{ i: string; type: string }>(
    `WITH RECURSIVE chain(i, oid) AS (
       SELECT u.i, a.atttypid FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(rel, col, i)
         JOIN pg_attribute a ON a.attrelid = to_regclass(u.rel) AND a.attname = u.col
       UNION ALL
       SELECT chain.i, t.typbasetype FROM chain JOIN pg_type t ON t.oid = chain.oid AND t.typtype = 'd')
     SELECT chain.i::text AS i, format_type(chain.oid, -1) AS type FROM chain JOIN pg_type t ON t.oid = chain.oid AND t.typtype <> 'd'`,
    [columns.map((c) => quoteQualified(c)), columns.map((c) => c.column)],
  );
  return new Map(rows.map((r) => [columnKey(columns[Number(r.i) - 1]), r.type]));
}

const matches = (edge: Edge, child: string, parent: string) =>
  edge.fromColumns
    .map((c, i) => {
      const collation = edge.toCollations[i] ? ` COLLATE ${edge.toCollations[i]}` : '';
      const value = edge.casts[i] ? `CAST(${child}.${quoteIdent(c)} AS ${edge.casts[i]})` : `${child}.${quoteIdent(c)}`;
      return `${parent}.${quoteIdent(edge.toColumns[i])} = ${value}${collation}`;
    })
    .join(' AND ');

/**
 * Which rows each table keeps when `subset` asks for a part of production, computed inside the
 * dump's snapshot. A table with a condition keeps its matching rows; every row a kept row
 * references is kept too (declared foreign keys, composite ones and self-references, and
 * `relations`); a table that references a restricted one keeps only the rows whose references are
 * all kept (its references to itself, or around a cycle of tables, may point at rows kept in the
 * same pass: see withinCycle). Iterated until nothing changes; tables outside all this keep every row.
 */
export async function planSubset(client: ClientBase, rules: RulesFile, catalog: RulesCatalog, dumped: TableName[]): Promise<SubsetPlan> {
  const plan: SubsetPlan = new Map();
  if (rules.subset.length === 0) return plan;
  const edges = await edgesBetween(client, catalog, rules, dumped);
  const restricted: TableName[] = rules.subset.map((s) => s.table).filter((t) => dumped.some((d) => same(d, t)));
  for (let grew = true; grew; ) {
    grew = false;
    for (const edge of edges) {
      if (restricted.some((t) => same(t, edge.to)) && !restricted.some((t) => same(t, edge.from))) {
        restricted.push(edge.from);
        grew = true;
      }
    }
  }
  const partitioned = restricted.filter((t) => catalog.tables.find((c) => same(c, t))?.partitioned);
  if (partitioned.length) {
    throw new RulesError(rules.file, partitioned.map((t) => `${tableKey(t)}: subset reaches a partitioned table, which is not supported`));
  }
  const unconvertible = await unconvertibleRelations(client, rules, catalog, edges, restricted);
  if (unconvertible.length) throw new RulesError(rules.file, unconvertible);

  // Every table read below is an ordinary one (partitioned ones are refused above), read ONLY: a
  // ctid names a row within one table, and an inheritance parent read whole would return its
  // children's rows, whose ctids repeat the parent's.
  const kept = new Map<string, Set<string>>(restricted.map((t) => [tableKey(t), new Set<string>()]));
  const keptOf = (t: TableName) => [...kept.get(tableKey(t))!];
  const add = (t: TableName, ctids: string[]) => {
    const set = kept.get(tableKey(t))!;
    const before = set.size;
    for (const ctid of ctids) set.add(ctid);
    return set.size > before;
  };

  for (const { table, where } of rules.subset) {
    if (!kept.has(tableKey(table))) continue;
    const select = `SELECT ctid::text AS ctid FROM ONLY ${quoteQualified(table)} WHERE (${where})`;
    // Planned first: a typo, or a constant of the condition's own text that is no value of its type
    // ('13/01/2024' as a date, month first), is named with its table. Planning runs functions too (a
    // STABLE one for estimates, an IMMUTABLE one folded), which may read rows: only an error that
    // points into the statement's text is the condition's own; any other goes on as it is (a data
    // error's value withheld, a dropped connection still transient).
    await client.query(`EXPLAIN (COSTS OFF) ${select}`).catch((error: unknown) => {
      throw isRulesTextError(error) || isConstantError(error) ? new RulesError(rules.file, [`${tableKey(table)}: subset where does not run: ${(error as Error).message}`]) : error;
    });
    const { rows } = await client.query<{ ctid: string }>(select).catch((error: unknown) => {
      // A typo in the condition names the rules file; an error the rows raised goes on as it is (its value withheld).
      throw isRulesTextError(error) ? new RulesError(rules.file, [`${tableKey(table)}: subset where does not run: ${(error as Error).message}`]) : error;
    });
    add(table, rows.map((r) => r.ctid));
  }
  const conditioned = (t: TableName) => rules.subset.some((s) => same(s.table, t));
  const cycles = referenceCycles(
    restricted.filter((t) => !conditioned(t)),
    edges,
  );

  for (let changed = true; changed; ) {
    changed = false;
    // Rows of tables without a condition of their own: kept when no row they reference is left out.
    for (const cycle of cycles) {
      const candidates = new Map<string, string[]>();
      for (const table of cycle) {
        const references = edges.filter((e) => same(e.from, table) && restricted.some((t) => same(t, e.to)) && !cycle.some((t) => same(t, e.to)));
        const params: string[][] = [];
        const clauses = references.map((edge) => {
          params.push(keptOf(edge.to));
          return `NOT EXISTS (SELECT 1 FROM ONLY ${quoteQualified(edge.to)} p WHERE ${matches(edge, 't', 'p')} AND NOT (p.ctid = ANY($${params.length}::tid[])))`;
        });
        const { rows } = await client.query<{ ctid: string }>(`SELECT t.ctid::text AS ctid FROM ONLY ${quoteQualified(table)} t WHERE ${clauses.join(' AND ') || 'true'}`, params);
        candidates.set(tableKey(table), rows.map((r) => r.ctid));
      }
      const within = edges.filter((e) => cycle.some((t) => same(t, e.from)) && cycle.some((t) => same(t, e.to)));
      const stay = await withinCycle(client, cycle, within, keptOf, candidates);
      for (const table of cycle) if (add(table, stay.get(tableKey(table))!)) changed = true;
    }
    // Rows referenced by kept rows are kept: the closure that keeps every foreign key whole.
    for (const table of restricted) {
      for (const edge of edges.filter((e) => same(e.to, table))) {
        if (!kept.has(tableKey(edge.from))) continue;
        const { rows } = await client.query<{ ctid: string }>(
          `SELECT p.ctid::text AS ctid FROM ONLY ${quoteQualified(table)} p WHERE EXISTS (SELECT 1 FROM ONLY ${quoteQualified(edge.from)} c WHERE c.ctid = ANY($1::tid[]) AND ${matches(edge, 'c', 'p')})`,
          [keptOf(edge.from)],
        );
        if (add(table, rows.map((r) => r.ctid))) changed = true;
      }
    }
  }
  for (const [key, set] of kept) plan.set(key, [...set]);
  return plan;
}

/**
 * A `relations` entry into a restricted table (the only ones the subset follows), between columns
 * of different kinds (text holding ids to an integer key, text to uuid), is followed by casting
 * every referencing value to the referenced column's type (comparedAs). A value that does not convert would fail
 * the dump with a data error naming neither the rules file nor the entry; each such entry is tried
 * first, in a savepoint (the dump's transaction goes on), so the refusal names it. Columns of one
 * kind (text to citext, int to bigint), and entries into tables that keep every row, are not read.
 */
async function unconvertibleRelations(client: ClientBase, rules: RulesFile, catalog: RulesCatalog, edges: Edge[], restricted: TableName[]): Promise<string[]> {
  const problems: string[] = [];
  for (const { from, to } of rules.relations) {
    // Followed only into a restricted table, from a dumped one (then restricted too: see planSubset).
    if (!restricted.some((t) => same(t, to)) || !restricted.some((t) => same(t, from))) continue;
    const [fromColumn, toColumn] = [columnIn(catalog, from, from.column), columnIn(catalog, to, to.column)];
    if (!fromColumn || !toColumn || fromColumn.category === toColumn.category) continue;
    // The cast the subset compares with (comparedAs): one kind to another always casts.
    const type = edges.find((e) => same(e.from, from) && same(e.to, to) && e.fromColumns.length === 1 && e.fromColumns[0] === from.column && e.toColumns[0] === to.column)?.casts[0];
    if (!type) continue;
    await client.query('SAVEPOINT db_fanout_relation_check');
    try {
      await client.query(`SELECT count(CAST(${quoteIdent(from.column)} AS ${type})) FROM ONLY ${quoteQualified(from)}`);
    } catch (error) {
      if (!quotesRowValue(error)) throw error;
      // The value stays out whatever ERROR_DETAIL says: the entry is what to fix.
      problems.push(`${columnKey(from)}: relations entry to ${columnKey(to)} does not run: a value does not convert to ${type} (${describeFailure(error, { detail: false }).error})`);
    } finally {
      await client.query('ROLLBACK TO SAVEPOINT db_fanout_relation_check');
      await client.query('RELEASE SAVEPOINT db_fanout_relation_check');
    }
  }
  return problems;
}

/**
 * The tables grouped by the references among them: tables that reach each other through references
 * (a table that references itself; a user's default address and the address's user) form one
 * group, decided together by withinCycle; every other table is a group of its own.
 */
function referenceCycles(tables: TableName[], edges: Edge[]): TableName[][] {
  const reaches = new Map(tables.map((t) => [tableKey(t), new Set<string>()]));
  for (const edge of edges) reaches.get(tableKey(edge.from))?.add(tableKey(edge.to));
  // Transitive closure: a handful of tables, so the plain way.
  for (let grew = true; grew; ) {
    grew = false;
    for (const targets of reaches.values()) {
      for (const target of [...targets]) {
        for (const next of reaches.get(target) ?? []) {
          if (!targets.has(next)) {
            targets.add(next);
            grew = true;
          }
        }
      }
    }
  }
  const groups: TableName[][] = [];
  for (const table of tables) {
    const key = tableKey(table);
    const group = groups.find(([first]) => reaches.get(key)!.has(tableKey(first)) && reaches.get(tableKey(first))!.has(key));
    if (group) group.push(table);
    else groups.push([table]);
  }
  return groups;
}

/**
 * The largest part of the candidates whose references within the group (a manager, a parent row,
 * the other table of a cycle) all point at rows kept already or inside that part: candidates whose
 * referenced row is neither go, then the candidates that referenced those, and so on. A root that
 * references itself, and rows that reference each other, stay: grown from the kept rows one level
 * per pass, they never started, and a deep chain took one pass per level. Removal takes one pass per
 * level of a broken chain only.
 */
async function withinCycle(client: ClientBase, group: TableName[], within: Edge[], keptOf: (t: TableName) => string[], candidates: Map<string, string[]>): Promise<Map<string, string[]>> {
  const fresh = new Map<string, Set<string>>();
  for (const table of group) {
    const already = new Set(keptOf(table));
    fresh.set(tableKey(table), new Set(candidates.get(tableKey(table))!.filter((ctid) => !already.has(ctid))));
  }
  const staying = (t: TableName) => [...keptOf(t), ...fresh.get(tableKey(t))!];
  for (let removed = within.length > 0; removed; ) {
    removed = false;
    for (const table of group) {
      const own = fresh.get(tableKey(table))!;
      const outgoing = within.filter((e) => same(e.from, table));
      if (!own.size || !outgoing.length) continue;
      const params: string[][] = [[...own]];
      const dangling = outgoing.map((edge) => {
        params.push(staying(edge.to));
        return `EXISTS (SELECT 1 FROM ONLY ${quoteQualified(edge.to)} p WHERE ${matches(edge, 't', 'p')} AND NOT (p.ctid = ANY($${params.length}::tid[])))`;
      });
      const { rows } = await client.query<{ ctid: string }>(`SELECT t.ctid::text AS ctid FROM ONLY ${quoteQualified(table)} t WHERE t.ctid = ANY($1::tid[]) AND (${dangling.join(' OR ')})`, params);
      for (const row of rows) own.delete(row.ctid);
      if (rows.length) removed = true;
    }
  }
  return new Map(group.map((t) => [tableKey(t), [...fresh.get(tableKey(t))!]]));
}

/** The WHERE clause that reads only a restricted table's kept rows (a TID scan); ctid qualified, as the query joins LATERALs. */
export function subsetWhere(table: TableName, ctids: string[]): string {
  if (ctids.length === 0) return 'false';
  return `${quoteQualified(table)}.ctid = ANY(${quoteLiteral(`{${ctids.map((c) => `"${c}"`).join(',')}}`)}::tid[])`;
}

/**
 * An error in the text the rules wrote (SQLSTATE class 42: syntax, an unknown column or function, a
 * type mismatch): its message names what the rules wrote. Not a row's value that a type's input
 * calls a syntax error (`syntax error in tsquery: "..."`, no position in the statement): that one
 * goes on as the data error it is, its value withheld.
 */
/** A data exception (class 22) at a position in the statement: a constant of the rules' own text, not a row's value. */
export function isConstantError(error: unknown): boolean {
  const { code, position } = error as { code?: unknown; position?: unknown };
  return typeof code === 'string' && code.startsWith('22') && position !== undefined && position !== null && position !== '';
}

export function isRulesTextError(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && code.startsWith('42') && !quotesRowValue(error);
}
