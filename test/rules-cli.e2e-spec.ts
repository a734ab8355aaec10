import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createDatabase, type TestDatabase } from './support/databases';
import { MASKING_RULES_YAML, MASKING_SCHEMA_SQL } from './support/masking-fixture';
import { runCli as cli } from './support/cli';

/** `db-fanout rules init` and `rules check` against a real source, without NATS. */
describe('db-fanout rules', () => {
  const KEY = 'rules cli spec key 0123456789';
  let source: TestDatabase;
  const dir = mkdtempSync(join(tmpdir(), 'db-fanout-rules-cli-'));

  beforeAll(async () => {
    source = await createDatabase('rules_cli', MASKING_SCHEMA_SQL);
  });
  afterAll(async () => {
    await source?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('init writes a strict starting file with suggestions and review marks; check refuses the review columns by name', async () => {
    const out = join(dir, 'rules.yaml');
    const init = await cli(['rules', 'init', '--source', source.url, '--out', out]);
    expect(init).toMatchObject({ code: 0, stderr: '' });
    expect(init.stdout).toMatch(/^wrote .*rules\.yaml: \d+ column\(s\) marked review/);
    const text = readFileSync(out, 'utf8');
    expect(text).toContain('strict: true');
    expect(text).toMatch(/public\.customers:\n(\s+\w+: .+\n)*\s+email: email\n/);
    expect(text).toMatch(/\s+profile: review\n/);

    const check = await cli(['rules', 'check', '--source', source.url, '--rules', out]);
    expect(check.code).toBe(1);
    expect(check.stdout).toContain('public.customers.profile: marked review; decide its strategy');

    // init never overwrites a rules file someone has edited.
    expect((await cli(['rules', 'init', '--source', source.url, '--out', out])).code).toBe(2);
  });

  it('check passes decided rules (DUMP_RULES and MASKING_KEY as the dumper has them), then names a new production column', async () => {
    const rules = join(dir, 'decided.yaml');
    writeFileSync(rules, MASKING_RULES_YAML);
    const ok = await cli(['rules', 'check', '--source', source.url], { DUMP_RULES: rules, MASKING_KEY: KEY });
    expect(ok).toMatchObject({ code: 0, stderr: '' });
    expect(ok.stdout).toContain('nothing to refuse (5 tables, 11 masked columns, strict)');

    await source.query('ALTER TABLE public.shipments ADD COLUMN recipient text');
    const refused = await cli(['rules', 'check', '--source', source.url, '--rules', rules], { MASKING_KEY: KEY });
    expect(refused.code).toBe(1);
    expect(refused.stdout).toContain('public.shipments.recipient: no rule (strict mode needs one for every dumped column)');
    await source.query('ALTER TABLE public.shipments DROP COLUMN recipient');
  });

  it('check refuses what the dump refuses beyond the plan: a keyed strategy without MASKING_KEY, sql that does not run, a subset condition that does not run', async () => {
    const rules = join(dir, 'decided.yaml');
    writeFileSync(rules, MASKING_RULES_YAML);
    const withoutKey = await cli(['rules', 'check', '--source', source.url, '--rules', rules]);
    expect(withoutKey.code).toBe(1);
    expect(withoutKey.stdout).toContain('MASKING_KEY is required: keyed strategies');
    const shortKey = await cli(['rules', 'check', '--source', source.url, '--rules', rules], { MASKING_KEY: 'short' });
    expect(shortKey.stdout).toContain('MASKING_KEY must be at least 16 characters long');

    const badSql = join(dir, 'bad-sql.yaml');
    writeFileSync(badSql, MASKING_RULES_YAML.replace('score: { sql: "round(score, -1)" }', 'score: { sql: "no_such_function(score)" }'));
    const sql = await cli(['rules', 'check', '--source', source.url, '--rules', badSql], { MASKING_KEY: KEY });
    expect(sql.code).toBe(1);
    expect(sql.stdout).toMatch(/public\.customers\.score: sql does not run: function no_such_function\(.*\) does not exist/);

    const badSubset = join(dir, 'bad-subset.yaml');
    writeFileSync(badSubset, `${MASKING_RULES_YAML}subset:\n  public.customers: "no_such_column > 1"\n`);
    const subset = await cli(['rules', 'check', '--source', source.url, '--rules', badSubset], { MASKING_KEY: KEY });
    expect(subset.code).toBe(1);
    expect(subset.stdout).toContain('public.customers: subset where does not run: column "no_such_column" does not exist');
  });

  it('check refuses a jsonb path under a key with a tab that meets an array, null on a column NOT NULL on one partition, a number YAML changes', async () => {
    await source.query(`
      CREATE TABLE public.docs (id int PRIMARY KEY, profile jsonb);
      INSERT INTO public.docs VALUES (1, '{"home\\tinfo": [{"email": "alice.secret@corp.example"}]}');
      CREATE TABLE public.events (id int, region text, note text) PARTITION BY LIST (region);
      CREATE TABLE public.events_eu PARTITION OF public.events FOR VALUES IN ('eu');
      ALTER TABLE public.events_eu ALTER COLUMN note SET NOT NULL;
      INSERT INTO public.events VALUES (1, 'eu', 'call alice at home');`);
    try {
      const rules = join(dir, 'data-and-partitions.yaml');
      writeFileSync(rules, 'strict: false\ntables:\n  public.docs: { id: keep, profile: { jsonb: { "home\\tinfo.email": email } } }\n  public.events: { note: null }\n');
      const refused = await cli(['rules', 'check', '--source', source.url, '--rules', rules], { MASKING_KEY: KEY });
      expect(refused.code).toBe(1);
      expect(refused.stdout).toContain('public.events.note: null on a NOT NULL column');
      // The plan's refusal comes first; once it is fixed, the path over the array is named.
      writeFileSync(rules, 'strict: false\ntables:\n  public.docs: { id: keep, profile: { jsonb: { "home\\tinfo.email": email } } }\n  public.events: { note: redact }\n');
      const path = await cli(['rules', 'check', '--source', source.url, '--rules', rules], { MASKING_KEY: KEY });
      expect(path.code).toBe(1);
      expect(path.stdout).toContain('public.docs.profile: jsonb path home\tinfo.email meets an array in some rows');
      expect(`${refused.stdout}${path.stdout}${path.stderr}`).not.toMatch(/alice/);

      writeFileSync(rules, 'strict: false\ntables:\n  public.events: { note: { constant: 1.50 } }\n');
      const constant = await cli(['rules', 'check', '--source', source.url, '--rules', rules], { MASKING_KEY: KEY });
      expect(constant.code).toBe(1);
      expect(constant.stdout).toContain("line 3: constant 1.50 is read by YAML as the number 1.5; write 1.5 for that number, or '1.50' in quotes to keep the text as written (a JSON string under jsonb)");
    } finally {
      await source.query('DROP TABLE public.docs, public.events');
    }
  });

  it("check withholds the production value a row's error quotes (a CI log is a log), unless ERROR_DETAIL=true", async () => {
    await source.query("INSERT INTO public.customers (id, email, full_name, ssn, created_at) VALUES (90, 'alice@example.org', 'Alice Wonderlander', '123-45-6789', '2024-02-01')");
    try {
      await checkWithholds();
    } finally {
      await source.query('DELETE FROM public.customers WHERE id = 90');
    }
  });

  async function checkWithholds(): Promise<void> {
    const castSsn = join(dir, 'cast-ssn.yaml');
    writeFileSync(castSsn, `${MASKING_RULES_YAML}subset:\n  public.customers: "ssn::int > 5"\n`);
    const cast = await cli(['rules', 'check', '--source', source.url, '--rules', castSsn], { MASKING_KEY: KEY });
    expect(cast.code).toBe(1);
    expect(cast.stderr).toContain('db-fanout rules: invalid input syntax for type integer: (value withheld; ERROR_DETAIL=true shows it)');
    expect(`${cast.stdout}${cast.stderr}`).not.toContain('123-45-6789');

    // A type whose input calls a bad value a syntax error (42601) is a row's error too, not the rules' text.
    const castName = join(dir, 'cast-name.yaml');
    writeFileSync(castName, `${MASKING_RULES_YAML}subset:\n  public.customers: "to_tsvector('x') @@ full_name::tsquery"\n`);
    const tsquery = await cli(['rules', 'check', '--source', source.url, '--rules', castName], { MASKING_KEY: KEY });
    expect(tsquery.code).toBe(1);
    expect(tsquery.stderr).toContain('db-fanout rules: syntax error in tsquery: (value withheld; ERROR_DETAIL=true shows it)');
    expect(`${tsquery.stdout}${tsquery.stderr}`).not.toContain('Wonderlander');

    const shown = await cli(['rules', 'check', '--source', source.url, '--rules', castSsn], { MASKING_KEY: KEY, ERROR_DETAIL: 'true' });
    expect(shown.stderr).toContain('invalid input syntax for type integer: "123-45-6789"');
  }

  it('is wrong usage (exit 2) without a source or an action', async () => {
    expect((await cli(['rules', 'check'])).code).toBe(2);
    expect((await cli(['rules', 'frobnicate', '--source', source.url])).code).toBe(2);
  });
});
