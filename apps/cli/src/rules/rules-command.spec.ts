import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { ADMIN_URL, createDatabase, remainingAfter, type TestDatabase } from '../../../../test/support/databases';
import { MASKING_RULES_YAML, MASKING_SCHEMA_SQL } from '../../../../test/support/masking-fixture';
import { rulesMain, runRulesCommand } from './rules-command';

/** `rules check` in this process, with DUMP_RULES and MASKING_KEY set as given (restored after). */
async function check(source: string, env: { DUMP_RULES?: string; MASKING_KEY?: string }): Promise<{ code: number; out: string[] }> {
  const saved = { DUMP_RULES: process.env.DUMP_RULES, MASKING_KEY: process.env.MASKING_KEY };
  const out: string[] = [];
  try {
    for (const [name, value] of Object.entries(env)) process.env[name] = value;
    const code = await rulesMain(['check', '--source', source], (line) => out.push(line), (line) => out.push(line));
    return { code, out };
  } finally {
    for (const [name, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  }
}

describe('db-fanout rules check reads DUMP_RULES and MASKING_KEY as the dumper does', () => {
  let source: TestDatabase;
  const dir = mkdtempSync(join(tmpdir(), 'db-fanout-rules-command-'));
  const rules = join(dir, 'rules.yaml');

  beforeAll(async () => {
    source = await createDatabase('rules_command', MASKING_SCHEMA_SQL);
    writeFileSync(rules, MASKING_RULES_YAML);
  });
  afterAll(async () => {
    await source?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('trims both: a key only long enough with its surrounding blanks is refused, a blank one is no key, a padded path is the file', async () => {
    // 12 characters once trimmed, as the dumper has it: too short, though 22 as the variable holds it.
    const padded = await check(source.url, { DUMP_RULES: rules, MASKING_KEY: '     twelve chars\n    ' });
    expect(padded.code).toBe(1);
    expect(padded.out.join('\n')).toContain('MASKING_KEY must be at least 16 characters long');

    const blank = await check(source.url, { DUMP_RULES: rules, MASKING_KEY: '                    ' });
    expect(blank.code).toBe(1);
    expect(blank.out.join('\n')).toContain('MASKING_KEY is required: keyed strategies');

    const ok = await check(source.url, { DUMP_RULES: ` ${rules}\n`, MASKING_KEY: '  rules command spec key 0123  \n' });
    expect(ok).toMatchObject({ code: 0 });
    expect(ok.out.join('\n')).toContain('nothing to refuse');
  });
});

describe('db-fanout rules check runs conditions in the dumper\'s session settings, not the source role\'s', () => {
  let source: TestDatabase;
  const dir = mkdtempSync(join(tmpdir(), 'db-fanout-rules-settings-'));
  const rules = join(dir, 'rules.yaml');

  beforeAll(async () => {
    source = await createDatabase('rules_settings', 'CREATE TABLE public.events (id int PRIMARY KEY, happened date NOT NULL); INSERT INTO public.events VALUES (1, DATE \'2024-01-20\');');
    // A source whose own sessions read dates day first: the dumper's pinned session (DateStyle ISO, MDY) does not.
    await source.query(`ALTER DATABASE "${source.name}" SET DateStyle = 'ISO, DMY'`);
    writeFileSync(rules, ['strict: false', 'subset:', '  public.events: "happened >= \'13/01/2024\'"', ''].join('\n'));
  });
  afterAll(async () => {
    await source?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("withholds a row's value that a function in a condition fails on while it is planned", async () => {
    // cutoff() is STABLE: planning calls it for estimates, and it fails on a production value.
    await source.query(`CREATE TABLE public.settings (v text); INSERT INTO public.settings VALUES ('card 4111-1111-1111-1111');
      CREATE FUNCTION public.cutoff() RETURNS int LANGUAGE sql STABLE AS 'SELECT v::int FROM public.settings'`);
    const stable = join(dir, 'stable.yaml');
    writeFileSync(stable, ['strict: false', 'subset:', '  public.events: "id > public.cutoff()"', ''].join('\n'));
    const result = await check(source.url, { DUMP_RULES: stable });
    expect(result.code).toBe(1);
    expect(result.out.join('\n')).not.toContain('4111');
    expect(result.out.join('\n')).toContain('(value withheld');
  });

  it('refuses a condition the dump would refuse: 13/01/2024 is no date month first', async () => {
    const result = await check(source.url, { DUMP_RULES: rules });
    expect(result.code).toBe(1);
    // Named with its table, as the dump names it; the constant is the rules file's own, not a row's.
    expect(result.out.join('\n')).toContain('public.events: subset where does not run: date/time field value out of range: "13/01/2024"');
  });
});

describe('db-fanout rules check reads the source with row security off, as the dumper does', () => {
  let source: TestDatabase;
  const role = `rules_rls_${Math.random().toString(16).slice(2, 10)}`;
  const dir = mkdtempSync(join(tmpdir(), 'db-fanout-rules-rls-'));
  const rules = join(dir, 'rules.yaml');

  beforeAll(async () => {
    // The dumper's role owns the table, and a policy it is subject to (FORCE) hides some rows.
    source = await createDatabase('rules_rls', `CREATE ROLE "${role}" LOGIN;
      CREATE TABLE public.notes (id int PRIMARY KEY, owner text);
      INSERT INTO public.notes VALUES (1, 'a'), (2, 'b');
      ALTER TABLE public.notes OWNER TO "${role}";
      ALTER TABLE public.notes ENABLE ROW LEVEL SECURITY; ALTER TABLE public.notes FORCE ROW LEVEL SECURITY;
      CREATE POLICY only_a ON public.notes USING (owner = 'a');`);
    writeFileSync(rules, ['strict: false', 'subset:', '  public.notes: "id > 0"', ''].join('\n'));
  });
  afterAll(async () => {
    await source?.drop();
    const { Client } = await import('pg');
    const admin = new Client({ connectionString: ADMIN_URL });
    await admin.connect();
    await admin.query(`DROP ROLE IF EXISTS "${role}"`).finally(() => admin.end());
    rmSync(dir, { recursive: true, force: true });
  });

  it("reports what the dump meets: a policy would filter the dumper's reads", async () => {
    const asRole = new URL(source.url);
    asRole.username = role;
    const result = await check(asRole.toString(), { DUMP_RULES: rules });
    expect(result.code).toBe(1);
    expect(result.out.join('\n')).toContain('row-level security');
  });
});

/**
 * The check runs the dump's scans on production (a subset's closure: full scans, minutes on a large
 * table) in one transaction that holds ACCESS SHARE on every table it read until it ends. A
 * migration's ALTER TABLE waited for the whole check, and every query on the table queued behind
 * it. It is watched as the dump is: production waiting for it ends it.
 */
describe('db-fanout rules check while production runs DDL', () => {
  let source: TestDatabase;
  const dir = mkdtempSync(join(tmpdir(), 'db-fanout-rules-lockwatch-'));
  const rules = join(dir, 'rules.yaml');
  const checkSessions = () => source.query<{ pid: number; query: string }>(`SELECT pid, query FROM pg_stat_activity WHERE application_name = 'db-fanout-cli' AND datname = current_database()`);

  beforeAll(async () => {
    source = await createDatabase('rules_lockwatch', 'CREATE TABLE public.customers (id int PRIMARY KEY, name text); INSERT INTO public.customers SELECT g, \'c\' FROM generate_series(1, 4000) g;');
    // 4,000 rows at 2 ms each: the subset's scan takes 8 s, as a large table's would take minutes.
    writeFileSync(rules, ['strict: false', 'subset:', '  public.customers: "pg_sleep(0.002) IS NOT NULL AND id % 2 = 0"', ''].join('\n'));
  });
  afterAll(async () => {
    await source?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('ends the check, exit 1, and lets an ALTER TABLE and the queries queued behind it through', async () => {
    const started = Date.now();
    const checking = check(source.url, { DUMP_RULES: rules }).then((result) => ({ ...result, at: Date.now() - started }));
    const production = new Client({ connectionString: source.url });
    const reader = new Client({ connectionString: source.url });
    await production.connect();
    await reader.connect();
    try {
      const deadline = Date.now() + 5_000;
      while (!(await checkSessions()).some((session) => session.query.includes('pg_sleep'))) {
        if (Date.now() > deadline) throw new Error('the check never reached its subset scan');
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      const ddlIssued = Date.now();
      const ddl = production.query('ALTER TABLE public.customers ADD COLUMN note text').then(() => Date.now() - ddlIssued);
      await new Promise((resolve) => setTimeout(resolve, 200));
      const readIssued = Date.now();
      const read = reader.query('SELECT count(*) FROM public.customers WHERE id = 1').then(() => Date.now() - readIssued);
      const [ddlMs, readMs, result] = await Promise.all([ddl, read, checking]);
      expect(result.code).toBe(1);
      expect(result.out).toEqual([
        'db-fanout rules: a session in production waits for a lock this check holds on public.customers (DDL or TRUNCATE): the check ends here and lets it through (production needs the table); run it again, at a quieter time',
      ]);
      // Within about the watch's second, where both waited for the rest of the 8 s scan.
      expect({ ddlMs: ddlMs < 2_500, readMs: readMs < 2_500 }).toEqual({ ddlMs: true, readMs: true });
      expect(result.at).toBeLessThan(5_000);
      // The check's sessions are gone from the server too, not left running the scan.
      expect(await remainingAfter(checkSessions)).toEqual([]);
    } finally {
      await production.end();
      await reader.end();
    }
  }, 30_000);

  it('gives up a lock wait of its own after lock_timeout, naming the cause', async () => {
    const holder = new Client({ connectionString: source.url });
    await holder.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('LOCK TABLE public.customers IN ACCESS EXCLUSIVE MODE');
      const out: string[] = [];
      const started = Date.now();
      await expect(runRulesCommand('check', { source: source.url, rules, write: (line) => out.push(line), lockTimeoutMs: 300 })).rejects.toThrow(
        'rules check waited 0.3 s for a lock on a table it reads, which production holds (DDL or a long transaction): it ends without a verdict; run it again, at a quieter time',
      );
      expect(Date.now() - started).toBeLessThan(5_000);
      expect(out).toEqual([]);
    } finally {
      await holder.query('ROLLBACK');
      await holder.end();
    }
  }, 30_000);
});

/** Wrong usage exits 2 before anything connects: no database is needed (the URL's port is closed). */
describe('db-fanout rules refuses wrong usage (exit 2)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'db-fanout-rules-usage-'));
  const rules = join(dir, 'rules.yaml');
  const closed = 'postgres://root@127.0.0.1:1/nowhere';

  beforeAll(() => writeFileSync(rules, 'strict: false\n'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** `db-fanout rules ...argv` with `env` set (restored after). */
  async function rulesCli(argv: string[], env: Record<string, string> = {}): Promise<{ code: number; out: string[] }> {
    const saved = Object.fromEntries(Object.keys(env).map((name) => [name, process.env[name]]));
    const out: string[] = [];
    try {
      Object.assign(process.env, env);
      const code = await rulesMain(argv, (line) => out.push(line), (line) => out.push(line));
      return { code, out };
    } finally {
      for (const [name, value] of Object.entries(saved)) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
  }

  it("refuses the other command's flag instead of ignoring it", async () => {
    expect(await rulesCli(['init', '--source', closed, '--rules', rules])).toEqual({
      code: 2,
      out: ['db-fanout rules: --rules is for rules check; rules init reads the catalog and writes a rules file (--out FILE)'],
    });
    expect(await rulesCli(['check', '--source', closed, '--rules', rules, '--out', join(dir, 'out.yaml')])).toEqual({
      code: 2,
      out: ['db-fanout rules: --out is for rules init; rules check writes no file, only what a dump would refuse'],
    });
  });

  it('refuses a --source that is no postgres:// URL, as SOURCE_DATABASE_URL is refused', async () => {
    for (const source of ['http://127.0.0.1:1/nowhere', 'mysql://root@127.0.0.1:1/nowhere']) {
      expect(await rulesCli(['check', '--source', source, '--rules', rules])).toEqual({ code: 2, out: ['db-fanout rules: --source must be a postgres:// URL'] });
    }
  });

  it('takes a bad variable for wrong usage, as the other commands do', async () => {
    const result = await rulesCli(['check', '--source', closed, '--rules', rules], { ERROR_DETAIL: 'maybe' });
    expect(result.code).toBe(2);
    expect(result.out.join('\n')).toContain('ERROR_DETAIL');
  });

  it('still takes DUMP_RULES for check only: init with DUMP_RULES set is no wrong usage', async () => {
    // Refused for the closed port (exit 1), not for DUMP_RULES.
    expect((await rulesCli(['init', '--source', closed], { DUMP_RULES: rules })).code).toBe(1);
  });
});
