import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isMap, isNode, isScalar, LineCounter, parse as parseYaml, parseDocument, visit } from 'yaml';
import { formatDottedName, splitDottedName } from './dotted-name';

/** Strategies that need MASKING_KEY: the same key and input give the same output everywhere. */
export const KEYED_STRATEGIES = ['email', 'name', 'phone', 'hash'] as const;
/** Strategies written as a bare word in the rules file. */
export const WORD_STRATEGIES = ['keep', 'review', 'redact', 'null', ...KEYED_STRATEGIES] as const;
export type WordStrategy = (typeof WORD_STRATEGIES)[number];

/** What may stand at a path inside a json/jsonb column. */
export type ConstantValue = string | number | boolean | null;
export type LeafStrategy = { kind: Exclude<WordStrategy, 'review'> } | { kind: 'constant'; value: ConstantValue };

export type Strategy =
  | { kind: WordStrategy }
  | { kind: 'constant'; value: ConstantValue }
  | { kind: 'sql'; expression: string }
  | { kind: 'jsonb'; paths: { path: string[]; strategy: LeafStrategy }[] };

export interface TableName {
  schema: string;
  name: string;
}

export interface ColumnName extends TableName {
  column: string;
}

export interface TableRules {
  table: TableName;
  columns: Map<string, Strategy>;
}

export interface Relation {
  from: ColumnName;
  to: ColumnName;
}

export interface RulesFile {
  /** Where the rules came from, for error messages. */
  file: string;
  /** sha256 of the file's bytes: the manifest records which rules a snapshot was made with. */
  digest: string;
  strict: boolean;
  tables: TableRules[];
  relations: Relation[];
  subset: { table: TableName; where: string }[];
}

/** A rules file that cannot be used; its message names the file and every problem in it. */
export class RulesError extends Error {
  readonly code = 'rules-invalid';
  constructor(
    readonly file: string,
    readonly problems: string[],
  ) {
    super(`rules file ${file}: ${problems.join('; ')}`);
    this.name = 'RulesError';
  }
}

export const tableKey = (t: TableName): string => formatDottedName([t.schema, t.name]);
export const columnKey = (c: ColumnName): string => formatDottedName([c.schema, c.name, c.column]);

/** A strategy as a user writes it, for messages and the manifest. */
export function describeStrategy(strategy: Strategy): string {
  if (strategy.kind === 'jsonb') return `jsonb {${strategy.paths.map((p) => `${p.path.join('.')}: ${describeStrategy(p.strategy)}`).join(', ')}}`;
  return strategy.kind;
}

/** Equal strategies mask equal inputs to equal outputs (what a foreign key needs from both ends). */
export function sameStrategy(a: Strategy, b: Strategy): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);

function parseStrategy(raw: unknown, where: string, problems: string[], insideJson = false): Strategy | undefined {
  // YAML's bare `null` (and JSON's null) is the null strategy.
  if (raw === null) return { kind: 'null' };
  if (typeof raw === 'string') {
    if ((WORD_STRATEGIES as readonly string[]).includes(raw) && !(insideJson && raw === 'review')) return { kind: raw as WordStrategy };
    problems.push(`${where}: unknown strategy ${JSON.stringify(raw)} (expected one of ${WORD_STRATEGIES.join(', ')}, or { constant: ... }, { sql: ... }, { jsonb: {...} })`);
    return undefined;
  }
  if (isRecord(raw) && Object.keys(raw).length === 1) {
    const [kind, value] = Object.entries(raw)[0];
    if (kind === 'constant') {
      if (value !== null && !['string', 'number', 'boolean'].includes(typeof value)) {
        problems.push(`${where}: constant must be a string, number, boolean or null`);
        return undefined;
      }
      return { kind: 'constant', value: value as ConstantValue };
    }
    if (kind === 'sql' && !insideJson) {
      if (typeof value !== 'string' || !value.trim()) {
        problems.push(`${where}: sql must be a non-empty SQL expression`);
        return undefined;
      }
      return { kind: 'sql', expression: value };
    }
    if (kind === 'jsonb' && !insideJson) {
      if (!isRecord(value) || Object.keys(value).length === 0) {
        problems.push(`${where}: jsonb must map paths (a.b.c) to strategies`);
        return undefined;
      }
      const paths: { path: string[]; strategy: LeafStrategy }[] = [];
      for (const [path, leaf] of Object.entries(value)) {
        const segments = path.split('.');
        if (segments.some((s) => s === '')) {
          problems.push(`${where}: jsonb path ${JSON.stringify(path)} has an empty segment`);
          continue;
        }
        const strategy = parseStrategy(leaf, `${where} path ${path}`, problems, true);
        if (strategy) paths.push({ path: segments, strategy: strategy as LeafStrategy });
      }
      return { kind: 'jsonb', paths };
    }
  }
  problems.push(
    `${where}: ${JSON.stringify(raw)} is not a strategy (expected a word such as keep or email, or { constant: ... }${insideJson ? '' : ', { sql: ... }, { jsonb: {...} }'})`,
  );
  return undefined;
}

function parseColumnName(text: unknown, where: string, problems: string[]): ColumnName | undefined {
  const parts = typeof text === 'string' ? splitDottedName(text, 3) : undefined;
  if (!parts) {
    problems.push(`${where}: ${JSON.stringify(text)} must be written schema.table.column`);
    return undefined;
  }
  return { schema: parts[0], name: parts[1], column: parts[2] };
}

function parseTableName(text: string, where: string, problems: string[]): TableName | undefined {
  const parts = splitDottedName(text, 2);
  if (!parts) {
    problems.push(`${where}: table ${JSON.stringify(text)} must be written schema.table`);
    return undefined;
  }
  return { schema: parts[0], name: parts[1] };
}

/**
 * The entries of a section that maps schema.table to something (`tables`, `subset`), each with its
 * parsed table name. A section that is not a mapping, a key that is not schema.table, or a table
 * written twice in different spellings (`public.customers` and `"public".customers`: YAML sees two
 * keys, and both would apply) is a problem and yields nothing. Lazy, so problems keep the order of the file.
 */
function* tableEntries(raw: unknown, section: string, notAMapping: string, problems: string[]): Generator<[TableName, unknown]> {
  const entries = raw ?? {};
  if (!isRecord(entries)) {
    problems.push(notAMapping);
    return;
  }
  const spellings = new Map<string, string>();
  for (const [tableText, value] of Object.entries(entries)) {
    const table = parseTableName(tableText, section, problems);
    if (!table) continue;
    const first = spellings.get(tableKey(table));
    if (first !== undefined) {
      problems.push(`${section}: ${first} and ${tableText} name the same table ${tableKey(table)}; write it once`);
      continue;
    }
    spellings.set(tableKey(table), tableText);
    yield [table, value];
  }
}

/**
 * Constants YAML reads as other digits than the file shows: `01234` is the number 1234 (a zip code
 * or an account number loses its zeros), `0x1F` is 31, `12345678901234567890` is past a double's
 * precision (12345678901234567000), `1.50` is 1.5. Any number whose text, as it will be written
 * (String), is not its source is named with its line: the number as it will be written, or the text
 * in quotes.
 */
function constantsNotAsWritten(text: string): string[] {
  const lines = new LineCounter();
  const found: string[] = [];
  visit(parseDocument(text, { lineCounter: lines }), {
    Pair(_key, pair) {
      const { key, value } = pair;
      if (!isScalar(key) || key.value !== 'constant' || !isScalar(value) || typeof value.value !== 'number') return;
      const written = value.source ?? '';
      if (String(value.value) === written) return;
      const { line } = lines.linePos(value.range?.[0] ?? 0);
      // Quoted, a constant is text: the column reads it as written, a jsonb leaf becomes a JSON string.
      found.push(`line ${line}: constant ${written} is read by YAML as the number ${value.value}; write ${value.value} for that number, or '${written}' in quotes to keep the text as written (a JSON string under jsonb)`);
    },
  });
  return found;
}

/**
 * Column names YAML reads as something else than text: `null` and `~` are null (the column became
 * `""`), `01` is the number 1 (the rule went to column `1`), `True` the boolean true (`true`). A
 * rule would silently name another column than written, so each is named with its line, to be quoted.
 */
function columnNamesNotText(text: string): string[] {
  const lines = new LineCounter();
  const found: string[] = [];
  const tables = parseDocument(text, { lineCounter: lines }).get('tables');
  if (!isMap(tables)) return found;
  for (const table of tables.items) {
    if (!isMap(table.value)) continue;
    for (const { key } of table.value.items) {
      if (isScalar(key) && typeof key.value === 'string') continue;
      // A key that is no scalar (`? [a, b]`) is a mapping or a list: read as its text, written as in the file.
      const range = isNode(key) ? key.range : undefined;
      const written = range ? text.slice(range[0], range[1]).trim() : String(key);
      const value: unknown = isScalar(key) ? key.value : isNode(key) ? (key.toJSON() as unknown) : key;
      const read = value === null || value === undefined ? 'null' : typeof value === 'number' ? `the number ${value}` : typeof value === 'boolean' ? `the boolean ${value}` : Array.isArray(value) ? 'a list' : `a ${typeof value}`;
      const { line } = lines.linePos(range?.[0] ?? 0);
      found.push(`line ${line}: column ${written} is read by YAML as ${read}, not as a name; write it in quotes ('${written}') to name that column`);
    }
  }
  return found;
}

/** Parses and validates a rules file's text (YAML, of which JSON is a subset). */
export function parseRules(text: string, file: string): RulesFile {
  const problems: string[] = [];
  let document: unknown;
  try {
    document = parseYaml(text, { uniqueKeys: true, strict: true });
  } catch (error) {
    throw new RulesError(file, [`not valid YAML or JSON: ${(error as Error).message.split('\n')[0]}`]);
  }
  problems.push(...constantsNotAsWritten(text), ...columnNamesNotText(text));
  if (!isRecord(document)) throw new RulesError(file, ['must be a mapping with tables (and optionally strict, relations, subset)']);
  for (const key of Object.keys(document)) {
    if (!['strict', 'tables', 'relations', 'subset'].includes(key)) problems.push(`unknown top-level key ${JSON.stringify(key)} (expected strict, tables, relations, subset)`);
  }
  const strict = document.strict ?? true;
  if (typeof strict !== 'boolean') problems.push('strict must be true or false');

  const tables: TableRules[] = [];
  for (const [table, rawColumns] of tableEntries(document.tables, 'tables', 'tables must map schema.table to { column: strategy }', problems)) {
    const columns = new Map<string, Strategy>();
    if (!isRecord(rawColumns)) {
      problems.push(`${tableKey(table)}: must map columns to strategies`);
      continue;
    }
    for (const [column, rawStrategy] of Object.entries(rawColumns)) {
      const strategy = parseStrategy(rawStrategy, columnKey({ ...table, column }), problems);
      if (strategy) columns.set(column, strategy);
    }
    tables.push({ table, columns });
  }

  const relations: Relation[] = [];
  const rawRelations = document.relations ?? [];
  if (!Array.isArray(rawRelations)) problems.push('relations must be a list of { from: schema.table.column, to: schema.table.column }');
  else {
    rawRelations.forEach((raw: unknown, index) => {
      const where = `relations[${index}]`;
      if (!isRecord(raw) || Object.keys(raw).some((k) => k !== 'from' && k !== 'to')) {
        problems.push(`${where}: must be { from: schema.table.column, to: schema.table.column }`);
        return;
      }
      const from = parseColumnName(raw.from, `${where}.from`, problems);
      const to = parseColumnName(raw.to, `${where}.to`, problems);
      if (from && to) relations.push({ from, to });
    });
  }

  const subset: { table: TableName; where: string }[] = [];
  for (const [table, where] of tableEntries(document.subset, 'subset', 'subset must map schema.table to a SQL condition', problems)) {
    if (typeof where !== 'string' || !where.trim()) problems.push(`subset ${tableKey(table)}: must be a SQL condition, e.g. "created_at >= date '2024-01-01'"`);
    else subset.push({ table, where });
  }

  if (problems.length) throw new RulesError(file, problems);
  const digest = createHash('sha256').update(text).digest('hex');
  return { file, digest, strict: strict as boolean, tables, relations, subset };
}

/** Reads DUMP_RULES: a missing or unreadable file is a RulesError naming it. */
export function loadRulesFile(path: string): RulesFile {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new RulesError(path, [`cannot be read: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`]);
  }
  return parseRules(text, path);
}
