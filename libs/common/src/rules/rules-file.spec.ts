import { MASKING_RULES_YAML } from '../../../../test/support/masking-fixture';
import { parseRules, RulesError } from './rules-file';

const FILE = '/etc/db-fanout/rules.yaml';

function problemsOf(text: string): string[] {
  try {
    parseRules(text, FILE);
  } catch (error) {
    expect(error).toBeInstanceOf(RulesError);
    expect((error as Error).message).toContain(FILE);
    return (error as RulesError).problems;
  }
  throw new Error('expected the rules to be refused');
}

describe('rules file', () => {
  it('refuses a constant YAML would read as other digits (leading zeros, hex), naming its line', () => {
    const text = `tables:
  public.customers:
    zip: { constant: 01234 }
    code: { constant: 0x1F }
    quoted: { constant: '01234' }
    plain: { constant: 1234 }
    profile: { jsonb: { account: { constant: -007 } } }
`;
    expect(problemsOf(text)).toEqual([
      "line 3: constant 01234 is read by YAML as the number 1234; write 1234 for that number, or '01234' in quotes to keep the text as written (a JSON string under jsonb)",
      "line 4: constant 0x1F is read by YAML as the number 31; write 31 for that number, or '0x1F' in quotes to keep the text as written (a JSON string under jsonb)",
      "line 7: constant -007 is read by YAML as the number -7; write -7 for that number, or '-007' in quotes to keep the text as written (a JSON string under jsonb)",
    ]);
  });

  it('refuses a number YAML would keep with other digits (past a double, trailing zeros, exponents), naming its line', () => {
    const text = `tables:
  public.accounts:
    account_no: { constant: 12345678901234567890 }
    code: { constant: 1.50 }
    rate: { constant: 0.0500 }
    limit: { constant: 1e3 }
    exact: { constant: -12.25 }
    tiny: { constant: 1.5e-7 }
    profile: { jsonb: { balance: { constant: 10.0 } } }
`;
    expect(problemsOf(text)).toEqual([
      "line 3: constant 12345678901234567890 is read by YAML as the number 12345678901234567000; write 12345678901234567000 for that number, or '12345678901234567890' in quotes to keep the text as written (a JSON string under jsonb)",
      "line 4: constant 1.50 is read by YAML as the number 1.5; write 1.5 for that number, or '1.50' in quotes to keep the text as written (a JSON string under jsonb)",
      "line 5: constant 0.0500 is read by YAML as the number 0.05; write 0.05 for that number, or '0.0500' in quotes to keep the text as written (a JSON string under jsonb)",
      "line 6: constant 1e3 is read by YAML as the number 1000; write 1000 for that number, or '1e3' in quotes to keep the text as written (a JSON string under jsonb)",
      "line 9: constant 10.0 is read by YAML as the number 10; write 10 for that number, or '10.0' in quotes to keep the text as written (a JSON string under jsonb)",
    ]);
    expect(problemsOf('{"tables": {"public.accounts": {"rate": {"constant": 0.0500}}}}')).toEqual([
      "line 1: constant 0.0500 is read by YAML as the number 0.05; write 0.05 for that number, or '0.0500' in quotes to keep the text as written (a JSON string under jsonb)",
    ]);
  });

  it('refuses a column name YAML reads as other than text (null, a number, a boolean), naming its line and telling to quote it', () => {
    const text = `tables:
  public.t:
    id: keep
    null: keep
    01: keep
    True: keep
    "02": keep
    'null': keep
  public.u: { ~: keep }
`;
    expect(problemsOf(text)).toEqual([
      "line 4: column null is read by YAML as null, not as a name; write it in quotes ('null') to name that column",
      "line 5: column 01 is read by YAML as the number 1, not as a name; write it in quotes ('01') to name that column",
      "line 6: column True is read by YAML as the boolean true, not as a name; write it in quotes ('True') to name that column",
      "line 9: column ~ is read by YAML as null, not as a name; write it in quotes ('~') to name that column",
    ]);
    expect(parseRules(`tables:\n  public.t: { "01": keep, 'null': keep }\n`, FILE).tables[0].columns).toEqual(new Map([['01', { kind: 'keep' }], ['null', { kind: 'keep' }]]));
  });

  it('reads every strategy of the documented format', () => {
    const rules = parseRules(MASKING_RULES_YAML, FILE);
    expect(rules.strict).toBe(true);
    const customers = rules.tables.find((t) => t.table.name === 'customers')!.columns;
    expect(Object.fromEntries(customers)).toEqual({
      id: { kind: 'keep' },
      email: { kind: 'email' },
      full_name: { kind: 'name' },
      phone: { kind: 'phone' },
      ssn: { kind: 'redact' },
      notes: { kind: 'null' },
      api_token: { kind: 'hash' },
      tier: { kind: 'constant', value: 'gold' },
      score: { kind: 'sql', expression: 'round(score, -1)' },
      profile: { kind: 'jsonb', paths: [{ path: ['email'], strategy: { kind: 'email' } }, { path: ['address', 'street'], strategy: { kind: 'redact' } }] },
      created_at: { kind: 'keep' },
      referred_by: { kind: 'keep' },
    });
    expect(rules.relations).toEqual([
      { from: { schema: 'public', name: 'audit_log', column: 'actor_email' }, to: { schema: 'public', name: 'customers', column: 'email' } },
    ]);
    expect(rules.digest).toMatch(/^[0-9a-f]{64}$/);
  });

  it('reads JSON too, quoted names, a subset, and strict defaulting to true', () => {
    const rules = parseRules(
      JSON.stringify({ tables: { '"Sales"."Order Items"': { 'Unit "Price"': 'keep' } }, subset: { 'public.customers': "created_at >= date '2024-01-01'" } }),
      FILE,
    );
    expect(rules.strict).toBe(true);
    expect(rules.tables[0].table).toEqual({ schema: 'Sales', name: 'Order Items' });
    expect([...rules.tables[0].columns.keys()]).toEqual(['Unit "Price"']);
    expect(rules.subset).toEqual([{ table: { schema: 'public', name: 'customers' }, where: "created_at >= date '2024-01-01'" }]);
  });

  it('names every problem with where it is', () => {
    const problems = problemsOf(`
strict: maybe
tables:
  customers: { id: keep }
  public.orders: { id: mask, note: { sql: "" }, doc: { jsonb: { a..b: email, c: { sql: "x" } } }, other: [1] }
relations:
  - { from: public.a.b, to: public.c }
subset:
  public.orders: 42
extra: 1
`);
    expect(problems).toEqual([
      'unknown top-level key "extra" (expected strict, tables, relations, subset)',
      'strict must be true or false',
      'tables: table "customers" must be written schema.table',
      expect.stringContaining('public.orders.id: unknown strategy "mask"'),
      'public.orders.note: sql must be a non-empty SQL expression',
      'public.orders.doc: jsonb path "a..b" has an empty segment',
      expect.stringContaining('public.orders.doc path c: {"sql":"x"} is not a strategy'),
      expect.stringContaining('public.orders.other: [1] is not a strategy'),
      'relations[0].to: "public.c" must be written schema.table.column',
      'subset public.orders: must be a SQL condition, e.g. "created_at >= date \'2024-01-01\'"',
    ]);
  });

  it('refuses text that is not YAML, and a duplicated key', () => {
    expect(problemsOf('tables: [unclosed')[0]).toMatch(/^not valid YAML or JSON/);
    expect(problemsOf('tables:\n  public.a: { id: keep }\n  public.a: { id: keep }\n')[0]).toMatch(/^not valid YAML or JSON/);
  });

  it('refuses one table written twice in different spellings, in subset and tables, naming both spellings', () => {
    // YAML sees two keys: both subset conditions would apply (OR'ed), and one tables entry would win.
    const text = [
      'tables:',
      '  public.customers: { id: keep }',
      '  \'"public"."customers"\': { id: null }',
      'subset:',
      '  public.customers: "id > 10"',
      '  \'"public".customers\': "true"',
      '',
    ].join('\n');
    expect(problemsOf(text)).toEqual([
      'tables: public.customers and "public"."customers" name the same table public.customers; write it once',
      'subset: public.customers and "public".customers name the same table public.customers; write it once',
    ]);
  });
});
