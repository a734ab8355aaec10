import type { ClientBase } from 'pg';
import { quoteIdent, quoteQualified } from '@app/common/database';
import { RulesError, type RulesCatalog, type RulesFile, type TableName, tableKey } from '@app/common/rules';
import { quoteLiteral } from './masking-sql';

/** A reference between two dumped tables: a declared foreign key (possibly composite) or a `relations` entry. */
interface Edge {
  from: TableName;
  fromColumns: string[];
  to: TableName;
  toColumns: string[];
  /** The referenced columns' types: a `relations` entry compares as the referenced column does (citext stays case-insensitive). */
  toTypes: string[];
  /**
   * The referenced columns' collations, put on the comparison: two columns of different collations
   * cannot be compared as they are (42P22), and a key is looked up under the referenced column's.
   */
  toCollations: (string | null)[];
}

/** Per restricted table, the rows kept, by ctid: valid for every connection sharing the dump's snapshot. */
export type SubsetPlan = Map<string, string[]>;

const same = (a: TableName, b: TableName) => a.schema === b.schema && a.name === b.name;

function edgesBetween(catalog: RulesCatalog, rules: RulesFile, dumped: TableName[]): Edge[] {
  const isDumped = (t: TableName) => dumped.some((d) => same(d, t));
  const columnOf = (t: TableName, column: string) => catalog.tables.find((c) => same(c, t))!.columns.find((c) => c.name === column)!;
  const edges = [
    ...catalog.foreignKeys.map((fk) => ({ from: fk.from, fromColumns: fk.fromColumns, to: fk.to, toColumns: fk.toColumns })),
    ...rules.relations.map((r) => ({ from: r.from, fromColumns: [r.from.column], to: r.to, toColumns: [r.to.column] })),
  ];
  return edges
    .filter((e) => isDumped(e.from) && isDumped(e.to))
    .map((e) => ({ ...e, toTypes: e.toColumns.map((c) => columnOf(e.to, c).type), toCollations: e.toColumns.map((c) => columnOf(e.to, c).collation) }));
}

const matches = (edge: Edge, child: string, parent: string) =>
  edge.fromColumns
    .map((c, i) => {
      const collation = edge.toCollations[i] ? ` COLLATE ${edge.toCollations[i]}` : '';
      return `${parent}.${quoteIdent(edge.toColumns[i])} = CAST(${child}.${quoteIdent(c)} AS ${edge.toTypes[i]})${collation}`;
    })
    .join(' AND ');

/**
 * Which rows each table keeps when `subset` asks for a part of production, computed inside the
 * dump's snapshot. A table with a condition keeps its matching rows; every row a kept row
 * references is kept too (declared foreign keys, composite ones and self-references, and
 * `relations`); a table that references a restricted one keeps only the rows whose references are
 * all kept (its references to itself may point at rows kept in the same pass: see
 * withinSelfReferences). Iterated until nothing changes; tables outside all this keep every row.
 */
export async function planSubset(client: ClientBase, rules: RulesFile, catalog: RulesCatalog, dumped: TableName[]): Promise<SubsetPlan> {
  const plan: SubsetPlan = new Map();
  if (rules.subset.length === 0) return plan;
  const edges = edgesBetween(catalog, rules, dumped);
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
    const { rows } = await client.query<{ ctid: string }>(`SELECT ctid::text AS ctid FROM ONLY ${quoteQualified(table)} WHERE (${where})`).catch((error: unknown) => {
      // A typo in the condition names the rules file; an error the rows raised goes on as it is (its value withheld).
      throw isRulesTextError(error) ? new RulesError(rules.file, [`${tableKey(table)}: subset where does not run: ${(error as Error).message}`]) : error;
    });
    add(table, rows.map((r) => r.ctid));
  }
  const conditioned = (t: TableName) => rules.subset.some((s) => same(s.table, t));

  for (let changed = true; changed; ) {
    changed = false;
    for (const table of restricted) {
      // Rows of a table without its own condition: kept when no row they reference is left out.
      if (!conditioned(table)) {
        const outgoing = edges.filter((e) => same(e.from, table) && restricted.some((t) => same(t, e.to)));
        const references = outgoing.filter((edge) => !same(edge.to, table));
        const params: string[][] = [];
        const clauses = references.map((edge) => {
          params.push(keptOf(edge.to));
          return `NOT EXISTS (SELECT 1 FROM ONLY ${quoteQualified(edge.to)} p WHERE ${matches(edge, 't', 'p')} AND NOT (p.ctid = ANY($${params.length}::tid[])))`;
        });
        const { rows } = await client.query<{ ctid: string }>(`SELECT t.ctid::text AS ctid FROM ONLY ${quoteQualified(table)} t WHERE ${clauses.join(' AND ') || 'true'}`, params);
        const selfReferences = outgoing.filter((edge) => same(edge.to, table));
        const candidates = await withinSelfReferences(client, table, selfReferences, keptOf(table), rows.map((r) => r.ctid));
        if (add(table, candidates)) changed = true;
      }
      // Rows referenced by kept rows are kept: the closure that keeps every foreign key whole.
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
 * The largest part of `candidates` whose references to its own table (a manager, a parent row) all
 * point at rows kept already or inside that part: candidates whose referenced row is neither go,
 * then the candidates that referenced those, and so on. A root that references itself, and rows
 * that reference each other, stay: grown from the kept rows one level per pass, they never started,
 * and a deep chain took one pass per level. Removal takes one pass per level of a broken chain only.
 */
async function withinSelfReferences(client: ClientBase, table: TableName, selfReferences: Edge[], kept: string[], candidates: string[]): Promise<string[]> {
  if (!selfReferences.length || !candidates.length) return candidates;
  const already = new Set(kept);
  const fresh = new Set(candidates.filter((ctid) => !already.has(ctid)));
  const dangling = selfReferences
    .map((edge) => `EXISTS (SELECT 1 FROM ONLY ${quoteQualified(table)} p WHERE ${matches(edge, 't', 'p')} AND NOT (p.ctid = ANY($2::tid[])))`)
    .join(' OR ');
  while (fresh.size) {
    const { rows } = await client.query<{ ctid: string }>(`SELECT t.ctid::text AS ctid FROM ONLY ${quoteQualified(table)} t WHERE t.ctid = ANY($1::tid[]) AND (${dangling})`, [
      [...fresh],
      [...kept, ...fresh],
    ]);
    if (!rows.length) break;
    for (const row of rows) fresh.delete(row.ctid);
  }
  return [...fresh];
}

/** The WHERE clause that reads only a restricted table's kept rows (a TID scan); ctid qualified, as the query joins LATERALs. */
export function subsetWhere(table: TableName, ctids: string[]): string {
  if (ctids.length === 0) return 'false';
  return `${quoteQualified(table)}.ctid = ANY(${quoteLiteral(`{${ctids.map((c) => `"${c}"`).join(',')}}`)}::tid[])`;
}

/**
 * An error in the text the rules wrote (SQLSTATE class 42: syntax, an unknown column or function, a
 * type mismatch): its message names what the rules wrote, never a row's value.
 */
export function isRulesTextError(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && code.startsWith('42');
}
