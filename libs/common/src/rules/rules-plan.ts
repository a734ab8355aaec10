import type { CatalogColumn, CatalogKey, CatalogTable, RulesCatalog } from './rules-catalog';
import {
  type ColumnName,
  columnKey,
  describeStrategy,
  KEYED_STRATEGIES,
  type LeafStrategy,
  type RulesFile,
  sameStrategy,
  type Strategy,
  type TableName,
  tableKey,
} from './rules-file';

export interface ColumnPlan {
  column: CatalogColumn;
  strategy: Strategy;
  /**
   * Keyed strategies read the lower-cased value: the column is citext, or references one, so
   * values that were equal case-insensitively (and joined) stay equal once masked.
   */
  foldCase: boolean;
}

export interface TablePlan {
  table: CatalogTable;
  /** The dumped columns (generated ones left out), in table order. */
  columns: ColumnPlan[];
}

/** A reference between columns: one column pair of a declared foreign key, or a `relations` entry. */
export interface ColumnReference {
  from: ColumnName;
  to: ColumnName;
  /** The foreign key's name, or `relations` for a declared-in-the-rules one. */
  via: string;
}

export interface RulesPlan {
  tables: TablePlan[];
  references: ColumnReference[];
  /** Every reason the dump must not start, each naming schema.table.column. */
  problems: string[];
  /** A keyed strategy is in use: MASKING_KEY is required. */
  keyed: boolean;
}

const TEXT_TYPES = new Set(['text', 'varchar', 'bpchar', 'citext', 'name']);
const NOT_UNIQUE = new Set(['name', 'redact', 'constant', 'phone']);

/** `user_` + 20 hex digits + `@example.com` (masking-sql.ts). */
const EMAIL_LENGTH = 37;
const HASH_MIN_LENGTH = 32;
/** The longest fake name, `First Last` from masking-sql.ts's lists (its spec keeps the two in step). */
export const NAME_MAX_LENGTH = 16;
/**
 * The longest text a strategy writes where a shorter varchar(n) cuts it: hash's 64 hex digits, a
 * fake name. Two ends of a reference cut to different lengths no longer join.
 */
const WRITES_UP_TO: Partial<Record<Strategy['kind'], number>> = { hash: 64, name: NAME_MAX_LENGTH };

const isText = (c: CatalogColumn) => TEXT_TYPES.has(c.baseType);
/** How `hash` masks a column (masking-sql.ts): a uuid, 32 bytes, or hex text; the three never compare equal. */
const hashForm = (c: CatalogColumn): string => (['uuid', 'bytea'].includes(c.baseType) ? c.baseType : isText(c) ? 'text' : c.baseType);
/** The strategy (or one of its json paths) needs MASKING_KEY. */
export const usesKey = (s: Strategy | LeafStrategy): boolean =>
  (KEYED_STRATEGIES as readonly string[]).includes(s.kind) || (s.kind === 'jsonb' && s.paths.some((p) => usesKey(p.strategy)));

/** Why `strategy` cannot apply to `column`, or undefined when it can. */
export function typeProblem(strategy: Strategy, column: CatalogColumn): string | undefined {
  switch (strategy.kind) {
    case 'email':
      if (!isText(column)) return `email needs a text column (text, varchar, char, citext), not ${column.type}`;
      // Cut to fit, an address would no longer be one (and its last hex digits would be lost).
      return column.maxLength !== null && column.maxLength < EMAIL_LENGTH
        ? `email writes ${EMAIL_LENGTH} characters (user_<20 hex>@example.com), more than ${column.type} holds; use hash or sql`
        : undefined;
    case 'name':
    case 'phone':
    case 'redact':
      return isText(column) ? undefined : `${strategy.kind} needs a text column (text, varchar, char, citext), not ${column.type}`;
    case 'hash':
      if (!isText(column)) return ['uuid', 'bytea'].includes(column.baseType) ? undefined : `hash needs a text, uuid or bytea column, not ${column.type}`;
      // A shorter column keeps the hash's first digits: 32 of them (128 bits) still keep distinct values apart.
      return column.maxLength !== null && column.maxLength < HASH_MIN_LENGTH
        ? `hash needs at least ${HASH_MIN_LENGTH} characters (of its 64 hex digits) to keep values distinct; ${column.type} holds ${column.maxLength}`
        : undefined;
    case 'jsonb':
      return ['json', 'jsonb'].includes(column.baseType) ? undefined : `jsonb needs a json or jsonb column, not ${column.type}`;
    case 'null':
      return column.notNull ? 'null on a NOT NULL column' : undefined;
    case 'constant':
      // A NULL for every row, as null writes: refused where null is (the load failed on 23502).
      return strategy.value === null && column.notNull ? 'constant null on a NOT NULL column' : undefined;
    case 'keep':
    case 'review':
    case 'sql':
      return undefined;
  }
}

/** `null`, or `{ constant: null }`: a NULL for every row. How the rules wrote it, or undefined. */
const writesNull = (strategy: Strategy): string | undefined =>
  strategy.kind === 'null' ? 'null' : strategy.kind === 'constant' && strategy.value === null ? 'constant null' : undefined;
/** Inside a document, keep, email and hash keep distinct values apart; JSON null is a value like any other. */
const leafRepeats = (leaf: LeafStrategy): boolean => !['keep', 'email', 'hash'].includes(leaf.kind);
const describeKey = (key: CatalogKey): string => (key.exclusion ? `an exclusion constraint (${key.name})` : `a primary key or UNIQUE (${key.name})`);

/**
 * Rows that differ on a unique key whose columns `key` holds as they are, all kept, differ on `key`
 * too, whatever its other columns become: `UNIQUE (id, display_name)` with `id` the primary key.
 * Not for an exclusion constraint, whose operators need not be equality.
 */
function holdsKeptKey(key: CatalogKey, table: CatalogTable, strategyOf: (column: string) => Strategy | undefined): boolean {
  if (key.exclusion) return false;
  return table.keys.some(
    (other) =>
      other !== key &&
      other.identifiesRows &&
      other.keyColumns.length > 0 &&
      other.keyColumns.every((c) => key.keyColumns.includes(c) && (strategyOf(c) ?? { kind: 'keep' }).kind === 'keep'),
  );
}

/**
 * Why `strategy` would break a unique key or exclusion constraint over `column` (two rows the same
 * value), or undefined. `strategyOf` gives the table's other columns' strategies: without it, no
 * key is taken to be kept.
 */
export function uniqueProblem(strategy: Strategy, table: CatalogTable, column: CatalogColumn, strategyOf?: (column: string) => Strategy | undefined): string | undefined {
  // An INCLUDE column is carried, not compared: whatever it becomes, rows differ where they did.
  const onlyIncluded = (key: CatalogKey) => key.includedColumns.includes(column.name) && !key.keyColumns.includes(column.name);
  const keys = table.keys.filter((key) => key.columns.includes(column.name) && !onlyIncluded(key) && !(strategyOf && holdsKeptKey(key, table, strategyOf)));
  const [first] = keys;
  if (!first) return undefined;
  if (NOT_UNIQUE.has(strategy.kind) && !writesNull(strategy)) return `${strategy.kind} can give two rows the same value, and the column is under ${describeKey(first)}`;
  if (strategy.kind === 'jsonb') {
    const repeating = strategy.paths.filter((p) => leafRepeats(p.strategy));
    if (repeating.length) {
      const paths = repeating.map((p) => `${p.path.join('.')} (${p.strategy.kind})`).join(', ');
      return `jsonb path${repeating.length > 1 ? 's' : ''} ${paths} can give two rows the same value, and the column is under ${describeKey(first)}`;
    }
  }
  const nulls = writesNull(strategy);
  if (!nulls) return undefined;
  // NULLs are distinct under a plain UNIQUE (and make an exclusion's operator NULL), so null is safe
  // on a column the key holds as it is; not under NULLS NOT DISTINCT. Nor on one its expression or
  // WHERE reads (or a generated column in it is computed from): `coalesce(handle, '')` makes every
  // NULL one value, `WHERE deleted_at IS NULL` lets every row in.
  const equal = keys.find((key) => key.nullsNotDistinct);
  if (equal) return `${nulls} gives every row the same NULL, and the column is under a UNIQUE NULLS NOT DISTINCT (${equal.name})`;
  const read = keys.find((key) => !key.keyColumns.includes(column.name) && !key.includedColumns.includes(column.name));
  if (read) {
    return `${nulls} gives every row the same NULL, and the column is read by an expression or WHERE of ${describeKey(read)}, which can make the NULLs one value (coalesce(x, '')) or let more rows in`;
  }
  return undefined;
}

/**
 * Checks rules against the source's catalog for the tables being dumped and settles each dumped
 * column's strategy. Problems are collected, not thrown, so one refusal names every column at once.
 */
export function planRules(rules: RulesFile, catalog: RulesCatalog, dumped: TableName[]): RulesPlan {
  const problems: string[] = [];
  const find = (t: TableName) => catalog.tables.find((c) => c.schema === t.schema && c.name === t.name);
  const isDumped = (t: TableName) => dumped.some((d) => d.schema === t.schema && d.name === t.name);
  const ruleOf = (c: ColumnName) => rules.tables.find((t) => tableKey(t.table) === tableKey(c))?.columns.get(c.column);

  // A partition is read through its partitioned table, whose rules (and names) it takes.
  const notATable = (table: TableName, what: string) => {
    const partition = catalog.partitions.find((p) => p.table.schema === table.schema && p.table.name === table.name);
    if (partition) return `${tableKey(table)}: ${what} a partition of ${tableKey(partition.root)}; the dump reads it through ${tableKey(partition.root)}, so name that table instead`;
    const other = catalog.notCopied.find((r) => r.table.schema === table.schema && r.table.name === table.name);
    return other ? `${tableKey(table)}: ${what} a ${other.kind}, which the dump does not copy` : `${tableKey(table)}: ${what} a table that does not exist`;
  };
  for (const { table, columns } of rules.tables) {
    const found = find(table);
    if (!found) {
      problems.push(notATable(table, 'the rules name'));
      continue;
    }
    for (const column of columns.keys()) {
      if (!found.columns.some((c) => c.name === column)) problems.push(`${columnKey({ ...table, column })}: the rules name a column that does not exist`);
    }
  }
  for (const relation of rules.relations) {
    for (const end of [relation.from, relation.to]) {
      if (!find(end)?.columns.some((c) => c.name === end.column)) problems.push(`${columnKey(end)}: relations name a column that does not exist`);
    }
  }
  for (const { table } of rules.subset) {
    const found = find(table);
    if (!found) problems.push(notATable(table, 'subset names'));
    else if (found.partitioned) problems.push(`${tableKey(table)}: subset of a partitioned table is not supported`);
    else {
      // Each table is read ONLY (its own rows): the condition restricts the parent's rows, not its
      // children's, which went out whole while the manifest said subset.
      const unrestricted = catalog.inheritance
        .filter((i) => tableKey(i.parent) === tableKey(table) && isDumped(i.table) && !rules.subset.some((s) => tableKey(s.table) === tableKey(i.table)))
        .map((i) => tableKey(i.table));
      if (unrestricted.length) {
        problems.push(
          `${tableKey(table)}: subset of an inheritance parent whose children ${unrestricted.join(', ')} have no subset condition: the dump reads each table on its own (ONLY), so they would keep every row; give each of them a condition of its own (the same one, if that is what is meant)`,
        );
      }
    }
  }

  const references: ColumnReference[] = [
    ...catalog.foreignKeys.flatMap((fk) =>
      fk.fromColumns.map((column, i) => ({ from: { ...fk.from, column }, to: { ...fk.to, column: fk.toColumns[i] }, via: fk.constraint })),
    ),
    ...rules.relations.map((r) => ({ ...r, via: 'relations' })),
  ];
  const columnOf = (c: ColumnName) => find(c)?.columns.find((col) => col.name === c.column);
  // citext anywhere along a chain of references: a column joined case-insensitively to a citext key.
  const folds = new Set<string>();
  for (const table of catalog.tables) for (const c of table.columns) if (c.baseType === 'citext') folds.add(columnKey({ ...table, column: c.name }));
  for (let changed = true; changed; ) {
    changed = false;
    for (const r of references) {
      for (const [a, b] of [[r.from, r.to], [r.to, r.from]]) {
        if (folds.has(columnKey(a)) && !folds.has(columnKey(b)) && columnOf(b)) {
          folds.add(columnKey(b));
          changed = true;
        }
      }
    }
  }

  const tables: TablePlan[] = [];
  for (const wanted of dumped) {
    const table = find(wanted);
    if (!table) continue;
    const columns: ColumnPlan[] = [];
    for (const column of table.columns.filter((c) => !c.generated)) {
      const name = { ...table, column: column.name };
      const rule = ruleOf(name);
      if (!rule && rules.strict) {
        problems.push(`${columnKey(name)}: no rule (strict mode needs one for every dumped column)`);
        continue;
      }
      const strategy = rule ?? { kind: 'keep' as const };
      if (strategy.kind === 'review') {
        problems.push(`${columnKey(name)}: marked review; decide its strategy`);
        continue;
      }
      const mismatch = typeProblem(strategy, column);
      if (mismatch) problems.push(`${columnKey(name)}: ${mismatch}`);
      const repeats = uniqueProblem(strategy, table, column, (c) => (c === column.name ? strategy : ruleOf({ ...table, column: c })));
      if (repeats) problems.push(`${columnKey(name)}: ${repeats}`);
      const foldCase = folds.has(columnKey(name));
      // Masked on its lower-cased value (joined to a citext column), but unique case-sensitively:
      // 'Bob' and 'bob' are two rows here, and would become one masked value twice.
      if (foldCase && column.baseType !== 'citext' && usesKey(strategy) && table.keys.some((key) => key.columns.includes(column.name))) {
        problems.push(
          `${columnKey(name)}: ${strategy.kind} masks it on its lower-cased value (it is joined to a citext column), but it is under a case-sensitive primary key or UNIQUE, so two rows differing only in case would get the same value; make it citext too, or leave out the relation if the two are not joined case-insensitively`,
        );
      }
      columns.push({ column, strategy, foldCase });
    }
    // The dump leaves a generated column out and the environment computes it from the dumped
    // columns: a masking rule on it would do nothing (it is as masked as its inputs are). `keep`
    // says what happens anyway.
    for (const column of table.columns.filter((c) => c.generated)) {
      const name = { ...table, column: column.name };
      const rule = ruleOf(name);
      if (rule && rule.kind !== 'keep') {
        problems.push(
          `${columnKey(name)}: a generated column, which the dump leaves out and the environment computes from the dumped columns, so ${rule.kind} here would mask nothing; give the rules to the columns it is computed from (or write keep)`,
        );
      }
    }
    tables.push({ table, columns });
  }

  const strategyOf = (c: ColumnName): Strategy | undefined => {
    const plan = tables.find((t) => tableKey(t.table) === tableKey(c));
    return plan ? plan.columns.find((p) => p.column.name === c.column)?.strategy : ruleOf(c);
  };
  for (const reference of references) {
    if (!isDumped(reference.from)) continue;
    // A generated end takes no strategy: the dump leaves it out and the environment computes it from
    // the masked row, so whether it still equals the other end's masked value depends on its
    // expression (`lower(email)` does equal a column masked `email`, which masks the lower-cased
    // address; under `hash` it would not), which no comparison of strategies can tell. Read as keep,
    // it refused the consistent rules and accepted only keep, the production value, at the other end.
    // The load re-adds every foreign key, validated: a reference that no longer joins fails there.
    if (columnOf(reference.from)?.generated || columnOf(reference.to)?.generated) continue;
    const from = strategyOf(reference.from) ?? { kind: 'keep' as const };
    const to = strategyOf(reference.to) ?? { kind: 'keep' as const };
    if (!sameStrategy(from, to)) {
      problems.push(
        `${columnKey(reference.from)} (${describeStrategy(from)}) references ${columnKey(reference.to)} (${describeStrategy(to)}) through ${reference.via}: both need the same strategy so masked keys still join`,
      );
      continue;
    }
    const [fromColumn, toColumn] = [columnOf(reference.from), columnOf(reference.to)];
    // Under a nondeterministic collation 'Alice' joins 'alice' (or 'é' joins 'e'): keyed, they differ.
    const insensitive = [fromColumn, toColumn].find((c) => c && !c.deterministic);
    if (usesKey(from) && insensitive) {
      problems.push(
        `${columnKey(reference.from)} references ${columnKey(reference.to)} through ${reference.via} under the nondeterministic collation ${insensitive.collation}: values that join there without being equal (in case or accents) would get masked values that no longer join; use keep or a strategy that does not derive from the value at both ends`,
      );
      continue;
    }
    // A relation may join a uuid to its text form, or bytea to text; hashed, the two ends differ.
    if (from.kind === 'hash' && fromColumn && toColumn && hashForm(fromColumn) !== hashForm(toColumn)) {
      problems.push(
        `${columnKey(reference.from)} (${fromColumn.type}) references ${columnKey(reference.to)} (${toColumn.type}) through ${reference.via}: hash masks ${hashForm(fromColumn)} and ${hashForm(toColumn)} differently, and the masked keys would no longer join; give both columns the same type`,
      );
      continue;
    }
    const longest = WRITES_UP_TO[from.kind];
    if (longest !== undefined && fromColumn && toColumn) {
      const cut = (c: CatalogColumn) => Math.min(longest, c.maxLength ?? Number.POSITIVE_INFINITY);
      if (isText(fromColumn) && isText(toColumn) && cut(fromColumn) !== cut(toColumn)) {
        problems.push(
          `${columnKey(reference.from)} (${fromColumn.type}) references ${columnKey(reference.to)} (${toColumn.type}) through ${reference.via}: ${from.kind} would be cut to different lengths at the two ends, and the masked keys would no longer join; give both columns the same length`,
        );
      }
    }
  }

  return { tables, references, problems, keyed: tables.some((t) => t.columns.some((c) => usesKey(c.strategy))) };
}
