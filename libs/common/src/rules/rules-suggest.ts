import { isDeepStrictEqual } from 'node:util';
import { stringify } from 'yaml';
import type { CatalogColumn, CatalogTable, RulesCatalog } from './rules-catalog';
import { formatDottedName } from './dotted-name';
import { typeProblem, uniqueProblem } from './rules-plan';
import type { WordStrategy } from './rules-file';

/** Name patterns of columns that usually hold personal data, and the strategy to start from. */
const PERSONAL: [RegExp, string][] = [
  [/e_?mail/, 'email'],
  [/phone|mobile|fax|msisdn/, 'phone'],
  [/(^|_)(first|last|middle|given|family|full|display|user)_?name$|^name$|surname|nickname/, 'name'],
  [/ssn|social_security|passport|national_id|tax_id|iban|account_number|card|cvv|license/, 'redact'],
  [/password|passwd|secret|token|api_key|salt|otp/, 'hash'],
  [/address|street|city|zip|postal|postcode|birth|dob|ip_addr|(^|_)ip$|geo|latitude|longitude|note|comment|description|bio|message|body/, 'redact'],
];

const KEEP_CATEGORIES = new Set(['N', 'D', 'B']); // numbers, dates and times, booleans
const isKey = (table: CatalogTable, column: CatalogColumn) => table.keys.some((key) => key.columns.includes(column.name)) || column.name === 'id' || column.name.endsWith('_id');

/** A starting strategy for one column: personal-looking names first, then plain keys and numbers, else review. */
export function suggestStrategy(table: CatalogTable, column: CatalogColumn): unknown {
  const name = column.name.toLowerCase();
  const text = ['text', 'varchar', 'bpchar', 'citext', 'name'].includes(column.baseType);
  for (const [pattern, strategy] of PERSONAL) {
    if (!pattern.test(name)) continue;
    if (!text && !(strategy === 'hash' && ['uuid', 'bytea'].includes(column.baseType))) return 'review';
    // name, phone and redact can repeat values: a unique column gets a keyed hash instead.
    const pick = ['name', 'phone', 'redact'].includes(strategy) && table.keys.some((key) => key.columns.includes(column.name)) ? 'hash' : strategy;
    // One the check would refuse (an email into varchar(20)) is left for a person to decide.
    return typeProblem({ kind: pick as WordStrategy }, column) ? 'review' : pick;
  }
  if (['json', 'jsonb'].includes(column.baseType)) return 'review';
  if (['inet', 'cidr', 'macaddr', 'macaddr8'].includes(column.baseType)) return column.notNull || uniqueProblem({ kind: 'null' }, table, column) ? 'review' : null;
  if (KEEP_CATEGORIES.has(column.category)) return 'keep';
  if (isKey(table, column) && ['uuid', 'int2', 'int4', 'int8'].includes(column.baseType)) return 'keep';
  return 'review';
}

/**
 * The text of a starting rules file (db-fanout rules init): strict, every column of every table,
 * personal-looking columns with a suggested strategy, `review` where a person must decide.
 */
export function suggestRules(catalog: RulesCatalog): string {
  const tables: Record<string, Record<string, unknown>> = {};
  for (const table of catalog.tables) {
    const columns: Record<string, unknown> = {};
    for (const column of table.columns) if (!column.generated) columns[column.name] = suggestStrategy(table, column);
    tables[formatDottedName([table.schema, table.name])] = columns;
  }
  reviewMismatchedKeys(catalog, tables);
  const header = [
    '# db-fanout masking rules (DUMP_RULES). Written by `db-fanout rules init`: check every suggestion.',
    '# keep | email | name | phone | redact | null | hash | { constant: v } | { sql: "expr" } | { jsonb: { path: strategy } }',
    '# `review` marks a column a person must decide on: the dump refuses it until then.',
    '',
  ].join('\n');
  return `${header}${stringify({ strict: true, tables, relations: [], subset: {} }, { nullStr: 'null' })}`;
}

/**
 * Both ends of a foreign key need the same strategy, or the masked keys no longer join and the check
 * refuses them (a unique `phone` suggested `hash`, a column referencing it `phone`): where the
 * suggestions for the two ends differ, both are left to a person (`review`).
 */
function reviewMismatchedKeys(catalog: RulesCatalog, tables: Record<string, Record<string, unknown>>): void {
  const key = (table: { schema: string; name: string }) => formatDottedName([table.schema, table.name]);
  for (let changed = true; changed; ) {
    changed = false;
    for (const fk of catalog.foreignKeys) {
      fk.fromColumns.forEach((fromColumn, i) => {
        const [from, to] = [tables[key(fk.from)], tables[key(fk.to)]];
        const toColumn = fk.toColumns[i];
        if (!from || !to || !(fromColumn in from) || !(toColumn in to)) return;
        if (isDeepStrictEqual(from[fromColumn], to[toColumn])) return;
        from[fromColumn] = 'review';
        to[toColumn] = 'review';
        changed = true;
      });
    }
  }
}
