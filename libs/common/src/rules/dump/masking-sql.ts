import type { ClientBase } from 'pg';
import { quoteIdent } from '../../database';
import { type ColumnPlan, type ConstantValue, type LeafStrategy, type Strategy, usesKey } from '..';
import type { MaskingKey } from './masking-key';

/**
 * The padded keys live in two transaction-local settings of the dumping session (set_config(...,
 * true) with bind parameters), not in the COPY text: pg_stat_activity, pg_stat_statements and
 * log_min_duration_statement show the COPY without them. Each is read once per COPY (an InitPlan).
 */
const INNER_PAD = "(SELECT current_setting('db_fanout.mask_ipad')::bytea)";
const OUTER_PAD = "(SELECT current_setting('db_fanout.mask_opad')::bytea)";

/** Hands the padded keys to this session's current transaction (gone at its end). */
export async function loadKeyIntoSession(client: ClientBase, key: MaskingKey): Promise<void> {
  await client.query("SELECT set_config('db_fanout.mask_ipad', $1, true), set_config('db_fanout.mask_opad', $2, true)", [key.innerPad, key.outerPad]);
}

export const quoteLiteral = (value: string): string => {
  if (value.includes('\0')) throw new Error('a literal cannot contain a NUL byte');
  return `'${value.replaceAll("'", "''")}'`;
};

/**
 * HMAC-SHA256 of `label:value` (as UTF-8): the label keeps strategies apart (an email's hash is not
 * its hash strategy's), the value is the same in every table, column and json path.
 */
function hmac(label: string, bytes: string): string {
  return `sha256(${OUTER_PAD} || sha256(${INNER_PAD} || ${quoteLiteral(`${label}:`)}::bytea || ${bytes}))`;
}
const utf8 = (text: string) => `convert_to(${text}, 'UTF8')`;

// Deterministic fake names: 64 x 64 combinations, picked by two bytes of the keyed hash.
const FIRST_NAMES = [
  'Ada', 'Alan', 'Alice', 'Amara', 'Ana', 'Anders', 'Aoife', 'Arjun', 'Beatriz', 'Bruno', 'Chen', 'Chloe', 'Dara', 'David', 'Elena', 'Emeka',
  'Emma', 'Farah', 'Felix', 'Grace', 'Hana', 'Hugo', 'Ines', 'Ivan', 'Jamal', 'Jonas', 'Kai', 'Kenji', 'Lara', 'Leo', 'Lina', 'Luca',
  'Maja', 'Marta', 'Mateo', 'Mei', 'Mila', 'Nadia', 'Noah', 'Nora', 'Omar', 'Oscar', 'Paula', 'Priya', 'Quinn', 'Rafael', 'Rosa', 'Sami',
  'Sara', 'Sofia', 'Tariq', 'Tess', 'Theo', 'Uma', 'Vera', 'Viktor', 'Wen', 'Xavier', 'Yara', 'Yusuf', 'Zara', 'Zoe', 'Iris', 'Pablo',
];
const LAST_NAMES = [
  'Abe', 'Adams', 'Alvarez', 'Berg', 'Bianchi', 'Brown', 'Costa', 'Dubois', 'Eriksen', 'Evans', 'Fischer', 'Garcia', 'Gupta', 'Haddad', 'Hall', 'Ito',
  'Jansen', 'Jones', 'Kaur', 'Kim', 'Kowalski', 'Larsen', 'Lee', 'Lopez', 'Martin', 'Meyer', 'Moreau', 'Murphy', 'Nakamura', 'Nguyen', 'Novak', 'Okafor',
  'Olsen', 'Park', 'Patel', 'Perez', 'Petrov', 'Quinn', 'Rossi', 'Sato', 'Schmidt', 'Silva', 'Smith', 'Sousa', 'Tanaka', 'Taylor', 'Torres', 'Ueda',
  'Varga', 'Vogel', 'Walker', 'Wang', 'Weber', 'Wilson', 'Wong', 'Xu', 'Yamada', 'Young', 'Zhang', 'Ziegler', 'Moss', 'Reyes', 'Singh', 'Ahn',
];
/** The longest name the `name` strategy writes (rules-plan's NAME_MAX_LENGTH must agree: masking-sql.spec). */
export const LONGEST_FAKE_NAME = Math.max(...FIRST_NAMES.map((n) => n.length)) + 1 + Math.max(...LAST_NAMES.map((n) => n.length));
/**
 * A text[] of these values, each a quoted literal: the values reach PostgreSQL as written. Not an
 * array literal (`'{...}'`) of JSON strings: its parser reads JSON's `\t` for a tab as a plain `t`.
 */
export const textArray = (values: string[]): string => `ARRAY[${values.map(quoteLiteral).join(',')}]::text[]`;

/**
 * What `redact` leaves: ASCII whitespace (tab to carriage return, space) and ASCII punctuation, as
 * code point ranges. Not [:space:]/[:punct:]: those follow the database's locale, and under one such
 * as C.UTF-8 superscript and circled digits and fractions ('¹²³', '①', '½') count as punctuation and
 * went out as they were. chr() rather than a backslash escape, which standard_conforming_strings
 * would change.
 */
const REDACT_KEPT = "'[^ !-/:-@[-`{-~' || chr(9) || '-' || chr(13) || ']'";

/** A masked text from a text expression `v` (NULL in, NULL out), for the keyed and redacting strategies. */
function maskText(kind: 'email' | 'name' | 'phone' | 'hash' | 'redact', v: string): string {
  switch (kind) {
    case 'hash':
      return `encode(${hmac('hash', utf8(v))}, 'hex')`;
    case 'email':
      // 80 bits of the keyed hash: distinct addresses stay distinct for all practical purposes.
      return `'user_' || substr(encode(${hmac('email', utf8(`lower(${v})`))}, 'hex'), 1, 20) || '@example.com'`;
    case 'name':
      return `(SELECT (${textArray(FIRST_NAMES)})[get_byte(db_fanout_m.db_fanout_h, 0) % 64 + 1] || ' ' || (${textArray(LAST_NAMES)})[get_byte(db_fanout_m.db_fanout_h, 1) % 64 + 1] FROM (SELECT ${hmac('name', utf8(v))} AS db_fanout_h) db_fanout_m)`;
    case 'phone':
      // The separators of a phone number (space + ( ) - . /) stay; every other character becomes a
      // digit drawn from the keyed hash. Not only ASCII digits: a note in the field ("ask for
      // Maria") or digits of another script (full-width, Arabic-Indic) would go out as they are.
      // An empty value stays empty: regexp_split_to_table('', '') gives one row, an empty
      // character, which came out as one digit.
      return `CASE WHEN ${v} = '' THEN '' ELSE (SELECT string_agg(CASE WHEN db_fanout_s.db_fanout_c ~ '^[-+(). /]$' THEN db_fanout_s.db_fanout_c ELSE chr(48 + get_byte(db_fanout_m.db_fanout_h, ((db_fanout_s.db_fanout_i - 1) % 32)::int) % 10) END, '' ORDER BY db_fanout_s.db_fanout_i) FROM (SELECT ${hmac('phone', utf8(v))} AS db_fanout_h) db_fanout_m, regexp_split_to_table(${v}, '') WITH ORDINALITY AS db_fanout_s(db_fanout_c, db_fanout_i)) END`;
    case 'redact':
      // Same length; ASCII whitespace and punctuation kept, every other character (any script) becomes x.
      return `regexp_replace(${v}, ${REDACT_KEPT}, 'x', 'g')`;
  }
}

function constantSql(value: ConstantValue): string {
  return value === null ? 'NULL' : quoteLiteral(String(value));
}

/** One path of a json value masked; `x` is the (jsonb) document so far. */
function maskJsonPath(x: string, path: string[], strategy: LeafStrategy): string {
  if (strategy.kind === 'keep') return x;
  const p = textArray(path);
  let replacement: string;
  if (strategy.kind === 'null') replacement = "'null'::jsonb";
  else if (strategy.kind === 'constant') replacement = strategy.value === null ? "'null'::jsonb" : `to_jsonb(${quoteLiteral(JSON.stringify(strategy.value))}::jsonb)`;
  else replacement = `to_jsonb(${maskText(strategy.kind, `(db_fanout_j.db_fanout_x #>> ${p})`)})`;
  // A path that is absent or JSON null is left alone: NULL stays NULL inside documents too.
  const doc = 'db_fanout_j.db_fanout_x';
  return `(SELECT CASE WHEN ${doc} #> ${p} IS NULL OR ${doc} #> ${p} = 'null'::jsonb THEN ${doc} ELSE jsonb_set(${doc}, ${p}, ${replacement}, false) END FROM (SELECT ${x} AS db_fanout_x) db_fanout_j)`;
}

/** The SQL expression that produces one dumped column, masked by its strategy, named as the column. */
export function maskedColumnSql(plan: ColumnPlan): string {
  const column = quoteIdent(plan.column.name);
  const expression = maskedExpression(plan);
  return expression === column ? column : `${expression} AS ${column}`;
}

/**
 * The SELECT that COPY reads: every dumped column masked. A keyed column is computed in a LATERAL
 * subquery of its own, so PostgreSQL 14+ can memoize it per distinct input (a value repeated in a
 * million rows is hashed once); the result is the same, the keyed hash as strong.
 */
export function maskedSelectSql(columns: ColumnPlan[], from: string, where = ''): string {
  const laterals: string[] = [];
  const list = columns.map((plan) => {
    if (!usesKey(plan.strategy)) return maskedColumnSql(plan);
    // Our own names (db_fanout_*): an alias such as m1 collided with a table of that name, and
    // one such as m(h) captured a column named h (a phone number made of the hash's text).
    const alias = `db_fanout_m${laterals.length + 1}`;
    laterals.push(` LEFT JOIN LATERAL (SELECT ${maskedExpression(plan)} AS db_fanout_masked OFFSET 0) ${alias} ON true`);
    return `${alias}.db_fanout_masked AS ${quoteIdent(plan.column.name)}`;
  });
  return `SELECT ${list.join(', ')} FROM ${from}${laterals.join('')}${where}`;
}

function maskedExpression(plan: ColumnPlan): string {
  const column = quoteIdent(plan.column.name);
  const strategy: Strategy = plan.strategy;
  const cast = (expression: string) => `CAST(${expression} AS ${plan.column.type})`;
  // citext (or a column joined to one): mask the lower-cased value, as the comparisons were.
  const input = plan.foldCase ? `lower(${column}::text)` : `${column}::text`;
  switch (strategy.kind) {
    case 'keep':
      return column;
    case 'null':
      return cast('NULL');
    case 'constant':
      return cast(constantSql(strategy.value));
    case 'sql':
      return cast(`(${strategy.expression})`);
    case 'hash':
      if (plan.column.baseType === 'bytea') return cast(hmac('hash', column));
      if (plan.column.baseType === 'uuid') return cast(`encode(substring(${hmac('hash', utf8(input))} from 1 for 16), 'hex')::uuid`);
      return cast(maskText('hash', input));
    case 'email':
    case 'name':
    case 'phone':
    case 'redact':
      return cast(maskText(strategy.kind, input));
    case 'jsonb': {
      let document = `${column}::jsonb`;
      for (const { path, strategy: leaf } of strategy.paths) document = maskJsonPath(document, path, leaf);
      return cast(document);
    }
    case 'review':
      throw new Error(`${plan.column.name}: review is not a strategy that can be dumped`);
  }
}
