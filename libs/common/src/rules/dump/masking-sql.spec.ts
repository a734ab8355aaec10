import { createHmac } from 'node:crypto';
import { Client } from 'pg';
import { type CatalogColumn, type ColumnPlan, NAME_MAX_LENGTH, type Strategy } from '..';
import { createDatabase, type TestDatabase } from '../../../../../test/support/databases';
import { prepareMaskingKey } from './masking-key';
import { loadKeyIntoSession, LONGEST_FAKE_NAME, maskedColumnSql } from './masking-sql';

const KEY = 'correct horse battery staple';
const OTHER_KEY = 'another key, just as long';
const INPUTS = ['Alice@Example.org', "o'neil\\x@example.net", 'Zoë Łukasz', '+1 (555) 010-4242', '', 'line\none'];

let db: TestDatabase;
let client: Client;

const column = (type: string, baseType = type, notNull = false): CatalogColumn => ({ name: 'v', type, baseType, category: 'S', maxLength: null, notNull, collation: null, generated: false, deterministic: true });
const plan = (strategy: Strategy, col = column('text'), foldCase = false): ColumnPlan => ({ column: col, strategy, foldCase });

/** Masks each input with the given key through the same SQL the dumper's COPY uses. */
async function mask(values: (string | null)[], p: ColumnPlan, key = KEY): Promise<(string | null)[]> {
  await client.query('BEGIN');
  try {
    await loadKeyIntoSession(client, prepareMaskingKey(key));
    const { rows } = await client.query<{ v: string | null }>(
      `SELECT m.v::text AS v FROM (SELECT ${maskedColumnSql(p)}, ord FROM (SELECT CAST(x AS ${p.column.type}) AS v, ord FROM unnest($1::text[]) WITH ORDINALITY AS u(x, ord)) t) m ORDER BY ord`,
      [values],
    );
    return rows.map((r) => r.v);
  } finally {
    await client.query('COMMIT');
  }
}

beforeAll(async () => {
  db = await createDatabase('masking_sql', 'CREATE EXTENSION IF NOT EXISTS citext');
  client = new Client({ connectionString: db.url });
  await client.connect();
});

afterAll(async () => {
  await client?.end();
  await db?.drop();
});

describe('keyed masking in SQL', () => {
  it('computes HMAC-SHA256 with built-in sha256() only, equal to Node crypto for short and long keys', async () => {
    for (const key of [KEY, 'k'.repeat(100)]) {
      const masked = await mask(INPUTS, plan({ kind: 'hash' }), key);
      expect(masked).toEqual(INPUTS.map((v) => createHmac('sha256', key).update(`hash:${v}`).digest('hex')));
    }
  });

  it('gives the same output for the same key and input, and another key changes every output', async () => {
    for (const kind of ['email', 'name', 'phone', 'hash'] as const) {
      const first = await mask(INPUTS, plan({ kind }));
      expect(await mask(INPUTS, plan({ kind }))).toEqual(first);
      const other = await mask(INPUTS, plan({ kind }), OTHER_KEY);
      // A phone of separators only (or an empty value) has nothing the key could change.
      const changeable = INPUTS.map((v, i) => (kind === 'phone' && !/[^-+(). /]/.test(v) ? -1 : i)).filter((i) => i >= 0);
      for (const i of changeable) expect({ kind, input: INPUTS[i], out: other[i] }).not.toEqual({ kind, input: INPUTS[i], out: first[i] });
    }
  });

  it('keeps NULL as NULL under every strategy but constant', async () => {
    const strategies: Strategy[] = [
      { kind: 'keep' },
      { kind: 'email' },
      { kind: 'name' },
      { kind: 'phone' },
      { kind: 'redact' },
      { kind: 'null' },
      { kind: 'hash' },
      { kind: 'sql', expression: 'upper(v)' },
    ];
    for (const strategy of strategies) expect({ strategy, out: await mask([null], plan(strategy)) }).toEqual({ strategy, out: [null] });
    expect(await mask([null, 'x'], plan({ kind: 'constant', value: 'gold' }))).toEqual(['gold', 'gold']);
    const json = plan({ kind: 'jsonb', paths: [{ path: ['email'], strategy: { kind: 'email' } }] }, column('jsonb'));
    expect(await mask([null, '{"email": null}', '{"other": 1}'], json)).toEqual([null, '{"email": null}', '{"other": 1}']);
  });

  it('gives distinct emails and hashes to 20000 distinct inputs', async () => {
    const inputs = Array.from({ length: 20_000 }, (_, i) => `user${i}@example.org`);
    for (const kind of ['email', 'hash'] as const) expect(new Set(await mask(inputs, plan({ kind }))).size).toBe(inputs.length);
  });

  it('masks email addresses to addresses, case-insensitively, the same in a column and inside jsonb', async () => {
    const [upper, lower] = await mask(['Alice@Example.ORG', 'alice@example.org'], plan({ kind: 'email' }));
    expect(upper).toMatch(/^user_[0-9a-f]{20}@example\.com$/);
    expect(upper).toBe(lower);
    const json = plan({ kind: 'jsonb', paths: [{ path: ['contact', 'email'], strategy: { kind: 'email' } }] }, column('jsonb'));
    const [doc] = await mask(['{"contact": {"email": "ALICE@example.org", "kept": "yes"}}'], json);
    expect(JSON.parse(doc!)).toEqual({ contact: { email: upper, kept: 'yes' } });
  });

  it('masks a citext column (and what references it) on the lower-cased value, so case-insensitive joins still match', async () => {
    const citext = plan({ kind: 'hash' }, column('citext'), true);
    const [a, b] = await mask(['Zoë@Example.org', 'zoë@example.org'], citext);
    expect(a).toBe(b);
    const [c, d] = await mask(['Zoë@Example.org', 'zoë@example.org'], plan({ kind: 'hash' }));
    expect(c).not.toBe(d);
  });

  it("writes names no longer than the rules check assumes when it compares the two ends of a key", () => {
    expect(LONGEST_FAKE_NAME).toBe(NAME_MAX_LENGTH);
  });

  it('keeps the format of phone numbers and the length of redacted text', async () => {
    const phones = ['+1 (555) 010-4242', '06 12 34 56 78'];
    const masked = await mask(phones, plan({ kind: 'phone' }));
    masked.forEach((m, i) => {
      expect(m!.replace(/[0-9]/g, '9')).toBe(phones[i].replace(/[0-9]/g, '9'));
      expect(m).not.toBe(phones[i]);
    });
    // Whatever else is in the field goes too: a note, digits of other scripts.
    const noted = ['+1 (555) 010-4242 ask for Maria', '０３−１２３４', '٠١٢٣٤٥'];
    (await mask(noted, plan({ kind: 'phone' }))).forEach((m, i) => {
      expect(m).toMatch(/^[-+(). /0-9]+$/);
      expect(m).toHaveLength(noted[i].length);
      expect(m!.replace(/[0-9]/g, '9')).toBe(noted[i].replace(/[^-+(). /]/g, '9'));
    });
    // An empty value stays empty: it has no character to mask (one digit came out of nothing).
    expect(await mask(['', ' ', null], plan({ kind: 'phone' }))).toEqual(['', ' ', null]);
    const json = plan({ kind: 'jsonb', paths: [{ path: ['phone'], strategy: { kind: 'phone' } }] }, column('jsonb'));
    expect(await mask(['{"phone": ""}'], json)).toEqual(['{"phone": ""}']);
    const texts = ['123-45-6789', 'Zoë Łukasz, "quoted"'];
    expect(await mask(texts, plan({ kind: 'redact' }))).toEqual(['xxx-xx-xxxx', 'xxx xxxxxx, "xxxxxx"']);
  });

  it('redacts every character but ASCII whitespace and punctuation, whatever the locale calls punctuation', async () => {
    // Under C.UTF-8, [:punct:] holds superscript and circled digits and fractions: they went out as they were.
    const texts = ['¹²³-⁴⁵-⁶⁷⁸⁹', '①②③', '½ ¾', 'a\tb\u00a0c «d»', '!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~'];
    expect(await mask(texts, plan({ kind: 'redact' }))).toEqual(['xxx-xx-xxxx', 'xxx', 'x x', 'x\txxx xxx', texts[4]]);
  });

  it('names fakes from fixed lists and casts constants and sql results to the column type', async () => {
    const [name] = await mask(['Alice Wonderlander'], plan({ kind: 'name' }));
    expect(name).toMatch(/^[A-Z][a-z]+ [A-Z][a-z]+$/);
    const int = column('integer', 'int4');
    expect(await mask(['41', null], plan({ kind: 'sql', expression: 'v + 1' }, int))).toEqual(['42', null]);
    expect(await mask(['1'], plan({ kind: 'constant', value: 7 }, int))).toEqual(['7']);
  });
});
