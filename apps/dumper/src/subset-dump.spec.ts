import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeFailure } from '@app/common/observability';
import { parseRules } from '@app/common/rules';
import { createDatabase, createDumpSource, type DumpSource, type TestDatabase } from '../../../test/support/databases';
import { MASKING_RULES_YAML, MASKING_SCHEMA_SQL, MASKING_SEED_SQL } from '../../../test/support/masking-fixture';
import { writeSnapshot } from './snapshot-writer';

describe('subset inside the dump', () => {
  let db: TestDatabase;
  const dir = mkdtempSync(join(tmpdir(), 'db-fanout-subset-'));
  beforeAll(async () => {
    db = await createDatabase('subset_plan', MASKING_SCHEMA_SQL + MASKING_SEED_SQL);
  });
  afterAll(async () => {
    await db?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  const rowsPerTable = async (subset: string, jobs: number) => {
    const rules = parseRules(`${MASKING_RULES_YAML}${subset}`, 'rules.yaml');
    const { manifest } = await writeSnapshot({ date: '2024-01-05', sourceDatabaseUrl: db.url, snapshotDir: dir, tables: [], excludeTables: [], rules, maskingKey: 'subset spec key 0123', jobs });
    return Object.fromEntries(manifest.tables.map((t) => [t.table, [t.rows, Boolean(t.subset)]]));
  };

  it('keeps the condition, the closure over self-references, composite keys and relations, on one or several connections', async () => {
    const subset = `subset:\n  public.customers: "created_at >= date '2024-01-01'"\n`;
    const expected = { customers: [3, true], orders: [4, true], order_lines: [4, true], shipments: [2, true], audit_log: [4, true] };
    expect(await rowsPerTable(subset, 1)).toEqual(expected);
    expect(await rowsPerTable(subset, 3)).toEqual(expected);
  });

  it('restricts only the table with the condition and what references it: the tables it references keep every row', async () => {
    // Only shipment 101 is kept; nothing references shipments, and the tables it references stay whole.
    const subset = `subset:\n  public.shipments: "id = 101"\n`;
    expect(await rowsPerTable(subset, 2)).toEqual({ customers: [5, false], orders: [6, false], order_lines: [6, false], shipments: [1, true], audit_log: [5, false] });
  });
});

/** A source of the enclosing describe's own, set up with `sql`; dropped with its snapshot directory after it. */
function sourceFor(prefix: string, sql: string): () => DumpSource {
  let source: DumpSource | undefined;
  beforeAll(async () => {
    source = await createDumpSource(prefix, sql);
  });
  afterAll(() => source?.drop());
  return () => source!;
}

/** A snapshot of `source` dumped with these rules (YAML). */
const dumpWith = (source: DumpSource, rules: string, maskingKey?: string) =>
  writeSnapshot({ date: '2024-01-05', sourceDatabaseUrl: source.url, snapshotDir: source.dir, tables: [], excludeTables: [], rules: parseRules(rules, 'rules.yaml'), maskingKey });

describe('rules on an inheritance parent and its child', () => {
  // staff INHERITS people: reading people whole also returns staff's rows.
  const SQL = `
    CREATE TABLE public.people (id int PRIMARY KEY, email text);
    CREATE TABLE public.staff (badge text) INHERITS (public.people);
    INSERT INTO public.people VALUES (1, 'parent@example.org');
    INSERT INTO public.staff VALUES (2, 'secret.staff@corp.example', 'B-7');`;
  const RULES = `
strict: true
tables:
  public.people: { id: keep, email: keep }
  public.staff: { id: keep, email: redact, badge: redact }
`;
  const source = sourceFor('rules_inherit', SQL);

  const dump = async (subset = '') => {
    const { manifest, location } = await dumpWith(source(), `${RULES}${subset}`);
    const file = (table: string) => readFileSync(join(location, manifest.tables.find((t) => t.table === table)!.file), 'utf8');
    return { people: file('people'), staff: file('staff'), rows: Object.fromEntries(manifest.tables.map((t) => [t.table, t.rows])) };
  };

  it("dumps each table's own rows under its own rules: the child's masked value never leaves through the parent", async () => {
    const { people, staff, rows } = await dump();
    expect(people).not.toContain('secret.staff');
    expect(people.trim().split('\n')).toEqual(['id,email', '1,parent@example.org']);
    expect(staff).not.toContain('secret.staff');
    expect(rows).toEqual({ people: 1, staff: 1 });
  });

  it("subsets the parent by its own rows (a child's row positions repeat the parent's), each child by its own condition", async () => {
    const { people, staff, rows } = await dump('subset:\n  public.people: "id = 1"\n  public.staff: "id > 2"\n');
    expect(people.trim().split('\n')).toEqual(['id,email', '1,parent@example.org']);
    expect(staff.trim().split('\n')).toEqual(['id,email,badge']);
    expect(rows).toEqual({ people: 1, staff: 0 });
  });

  it('refuses a subset of the parent while a child has no condition of its own: the child would go out whole', async () => {
    await expect(dump('subset:\n  public.people: "id = 1"\n')).rejects.toMatchObject({
      name: 'RulesError',
      problems: [
        'public.people: subset of an inheritance parent whose children public.staff have no subset condition: the dump reads each table on its own (ONLY), so they would keep every row; give each of them a condition of its own (the same one, if that is what is meant)',
      ],
    });
  });
});

describe('masking SQL and names of the source', () => {
  // A table named like the query's LATERAL aliases (m1), and a column named like its inner ones (h).
  const SQL = `
    CREATE TABLE public.m1 (id int PRIMARY KEY, h text, email text);
    INSERT INTO public.m1 VALUES (1, '+1 (555) 010-4242', 'a@example.org');`;
  const RULES = `
strict: true
tables:
  public.m1: { id: keep, h: phone, email: email }
`;
  const source = sourceFor('rules_aliases', SQL);

  it('are never taken for its own aliases: a table m1 dumps, and a column h is masked as a phone number', async () => {
    const { manifest, location } = await dumpWith(source(), RULES, 'aliases spec key 0123');
    const [header, row] = readFileSync(join(location, manifest.tables[0].file), 'utf8').trim().split('\n');
    expect(header).toBe('id,h,email');
    const [, phone, email] = row.split(',');
    // Digits replaced, separators kept: the shape of the original, not the hash's text.
    expect(phone).toMatch(/^\+\d \(\d{3}\) \d{3}-\d{4}$/);
    expect(phone).not.toBe('+1 (555) 010-4242');
    expect(email).toMatch(/^user_[0-9a-f]{20}@example\.com$/);
  });
});

describe('jsonb paths that meet an array', () => {
  const SQL = `
    CREATE TABLE public.profiles (id int PRIMARY KEY, doc jsonb);
    INSERT INTO public.profiles VALUES (1, '{"addresses": [{"street": "1 Secret Rd"}], "email": "a@example.org"}'), (2, '{"email": "b@example.org"}');
    CREATE TABLE public.contacts (id int PRIMARY KEY, doc jsonb);
    INSERT INTO public.contacts VALUES (1, '[{"email": "top@level.example"}]');`;
  const source = sourceFor('rules_jsonb_arrays', SQL);
  const dump = (profiles: string, contacts = '{ id: keep, doc: null }') =>
    dumpWith(source(), `strict: true\ntables:\n  public.profiles: ${profiles}\n  public.contacts: ${contacts}\n`, 'jsonb arrays spec key 01');

  it('refuses a path that names a key where some row holds an array (the value under it would go out unmasked), before writing anything', async () => {
    await expect(dump('{ id: keep, doc: { jsonb: { addresses.street: redact, email: email } } }', '{ id: keep, doc: { jsonb: { email: email } } }')).rejects.toMatchObject({
      name: 'RulesError',
      problems: [
        'public.contacts.doc: jsonb path email meets an array in some rows, where masking cannot reach the values; mask the whole column (null, or sql) or name every element (a.0.b, a.1.b, ...)',
        'public.profiles.doc: jsonb path addresses.street meets an array in some rows, where masking cannot reach the values; mask the whole column (null, or sql) or name every element (a.0.b, a.1.b, ...)',
      ],
    });
  });

  it('refuses an array with elements no path names, and a path over a string where it names a key (the whole string would go out)', async () => {
    const rules = '{ id: keep, doc: { jsonb: { addresses.0.street: redact, email: email } } }';
    await source().query(`INSERT INTO public.profiles VALUES (3, '{"addresses": [{"street": "2 Hidden Rd"}, {"street": "3 Other Way"}]}')`);
    try {
      await expect(dump(rules)).rejects.toMatchObject({
        name: 'RulesError',
        problems: [
          "public.profiles.doc: jsonb path addresses.0.street: some rows' array holds more elements than the rules name (elements 0 to 0), and the others would go out unmasked; mask the whole column (null, or sql)",
        ],
      });
      // Every element named: masked, nothing refused.
      const { manifest, location } = await dump('{ id: keep, doc: { jsonb: { addresses.0.street: redact, addresses.1.street: redact, email: email } } }');
      const csv = readFileSync(join(location, manifest.tables.find((t) => t.table === 'profiles')!.file), 'utf8');
      expect(csv).not.toMatch(/Secret|Hidden|Other/);

      await source().query(`DELETE FROM public.profiles WHERE id = 3; INSERT INTO public.profiles VALUES (4, '"bare@example.org"')`);
      await expect(dump(rules)).rejects.toMatchObject({
        name: 'RulesError',
        problems: [
          'public.profiles.doc: jsonb path addresses.0.street meets a string or a number where it names a key or an element in some rows, and the whole value would go out unmasked; mask the whole column (null, or sql)',
          'public.profiles.doc: jsonb path email meets a string or a number where it names a key or an element in some rows, and the whole value would go out unmasked; mask the whole column (null, or sql)',
        ],
      });
    } finally {
      await source().query('DELETE FROM public.profiles WHERE id IN (3, 4)');
    }
  });

  it('masks an array element the path names by its index', async () => {
    const { manifest, location } = await dump('{ id: keep, doc: { jsonb: { addresses.0.street: redact, email: email } } }');
    const csv = readFileSync(join(location, manifest.tables.find((t) => t.table === 'profiles')!.file), 'utf8');
    expect(csv).not.toContain('Secret');
    expect(csv).toContain('x xxxxxx xx');
  });
});

describe('jsonb paths with an index segment over rows that hold no array there', () => {
  const SQL = `
    CREATE TABLE public.people (id int PRIMARY KEY, doc jsonb);
    INSERT INTO public.people VALUES
      (1, '{"phones": ["555-0101"], "2024": {"email": "one@example.org"}}'),
      (2, '{"phones": null, "2024": null}'),
      (3, '{"phones": {"0": "555-0103"}, "2024": {"email": "three@example.org"}}'),
      (4, '{}');`;
  const source = sourceFor('rules_jsonb_index', SQL);
  const dump = () => dumpWith(source(), 'strict: true\ntables:\n  public.people: { id: keep, doc: { jsonb: { phones.0: redact, 2024.email: email } } }\n', 'jsonb index spec key 01');

  it('masks the member of that key in an object, leaves null alone, and refuses a string or a number naming table, column and path', async () => {
    const { manifest, location } = await dump();
    const csv = readFileSync(join(location, manifest.tables.find((t) => t.table === 'people')!.file), 'utf8');
    expect(csv).not.toMatch(/555-01|one@|three@/);
    expect(csv).toContain('xxx-xxxx');

    const refused = {
      name: 'RulesError',
      problems: ['public.people.doc: jsonb path phones.0 meets a string or a number where it names a key or an element in some rows, and the whole value would go out unmasked; mask the whole column (null, or sql)'],
    };
    await source().query(`INSERT INTO public.people VALUES (5, '{"phones": "555-0105"}')`);
    try {
      await expect(dump()).rejects.toMatchObject(refused);
    } finally {
      await source().query('DELETE FROM public.people WHERE id = 5');
    }
    // A phone number stored as a number: it would go out as it is just the same.
    await source().query(`INSERT INTO public.people VALUES (6, '{"phones": 5550106}')`);
    try {
      await expect(dump()).rejects.toMatchObject(refused);
    } finally {
      await source().query('DELETE FROM public.people WHERE id = 6');
    }
  });
});

describe('jsonb paths through a key holding a control character', () => {
  // A tab inside a key: the check must look where the masking writes, under the real key.
  const SQL = `
    CREATE TABLE public.docs (id int PRIMARY KEY, profile jsonb);
    INSERT INTO public.docs VALUES (1, '{"home\\tinfo": {"email": "bob.secret@corp.example"}}');`;
  const source = sourceFor('rules_jsonb_control', SQL);
  const dump = () => dumpWith(source(), 'strict: true\ntables:\n  public.docs: { id: keep, profile: { jsonb: { "home\\tinfo.email": email } } }\n', 'jsonb control spec key 01');
  const refused = (what: string) => ({ name: 'RulesError', problems: [`public.docs.profile: jsonb path home\tinfo.email ${what}`] });

  it('masks the member under that key, and refuses the path where some row holds an array or a string there', async () => {
    const { manifest, location } = await dump();
    const csv = readFileSync(join(location, manifest.tables.find((t) => t.table === 'docs')!.file), 'utf8');
    expect(csv).not.toContain('bob.secret');
    expect(csv).toMatch(/user_[0-9a-f]{20}@example\.com/);

    await source().query(`INSERT INTO public.docs VALUES (2, '{"home\\tinfo": [{"email": "alice.secret@corp.example"}]}')`);
    try {
      await expect(dump()).rejects.toMatchObject(
        refused('meets an array in some rows, where masking cannot reach the values; mask the whole column (null, or sql) or name every element (a.0.b, a.1.b, ...)'),
      );
    } finally {
      await source().query('DELETE FROM public.docs WHERE id = 2');
    }
    await source().query(`INSERT INTO public.docs VALUES (3, '{"home\\tinfo": "carol.secret@corp.example"}')`);
    try {
      await expect(dump()).rejects.toMatchObject(
        refused('meets a string or a number where it names a key or an element in some rows, and the whole value would go out unmasked; mask the whole column (null, or sql)'),
      );
    } finally {
      await source().query('DELETE FROM public.docs WHERE id = 3');
    }
  });
});

describe('a foreign key declared on one partition', () => {
  const SQL = `
    CREATE TABLE public.customers (id int PRIMARY KEY);
    INSERT INTO public.customers VALUES (1), (2);
    CREATE TABLE public.events (id int, customer_id int, at date NOT NULL) PARTITION BY RANGE (at);
    CREATE TABLE public.events_2024 PARTITION OF public.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
    ALTER TABLE public.events_2024 ADD CONSTRAINT events_2024_customer FOREIGN KEY (customer_id) REFERENCES public.customers (id);
    INSERT INTO public.events VALUES (1, 2, '2024-03-01');`;
  const source = sourceFor('rules_partition_fk', SQL);

  it('restricts the partitioned table too, so the subset is refused rather than dump a row whose customer it left out', async () => {
    const rules = 'strict: true\ntables:\n  public.customers: { id: keep }\n  public.events: { id: keep, customer_id: keep, at: keep }\nsubset:\n  public.customers: "id = 1"\n';
    await expect(dumpWith(source(), rules)).rejects.toMatchObject({
      name: 'RulesError',
      problems: ['public.events: subset reaches a partitioned table, which is not supported'],
    });
  });
});

describe('a table that references itself, under a subset of a table it references', () => {
  const SQL = `
    CREATE TABLE public.orgs (id int PRIMARY KEY);
    INSERT INTO public.orgs VALUES (1), (2);
    CREATE TABLE public.employees (id int PRIMARY KEY, org_id int NOT NULL REFERENCES public.orgs, manager_id int REFERENCES public.employees);
    INSERT INTO public.employees VALUES (10, 1, NULL), (20, 2, NULL);
    UPDATE public.employees SET manager_id = 10 WHERE id = 10;              -- the CEO is her own manager
    INSERT INTO public.employees VALUES (11, 1, 10), (12, 1, 11);           -- a chain under her
    INSERT INTO public.employees VALUES (30, 1, NULL), (31, 1, 30);
    UPDATE public.employees SET manager_id = 31 WHERE id = 30;              -- two who manage each other
    INSERT INTO public.employees VALUES (21, 1, 20);                        -- managed from the org left out
    INSERT INTO public.employees SELECT 1000 + g, 1, CASE WHEN g = 1 THEN 12 ELSE 1000 + g - 1 END FROM generate_series(1, 400) g; -- 400 deep under 12`;
  const source = sourceFor('rules_self_reference', SQL);
  const rules = 'strict: true\ntables:\n  public.orgs: { id: keep }\n  public.employees: { id: keep, org_id: keep, manager_id: keep }\nsubset:\n  public.orgs: "id = 1"\n';

  it('keeps every row whose references all stay, cycles included, and only those, in few passes', async () => {
    const { manifest, location } = await dumpWith(source(), rules);
    const file = manifest.tables.find((t) => t.table === 'employees')!;
    const ids = readFileSync(join(location, file.file), 'utf8').trim().split('\n').slice(1).map((line) => Number(line.split(',')[0])).sort((a, b) => a - b);
    expect(ids).toEqual([10, 11, 12, 30, 31, ...Array.from({ length: 400 }, (_, i) => 1001 + i)]);
  }, 60_000);
});

describe('two tables that reference each other, under a subset of a table one of them references', () => {
  // A user's default address, and the user an address belongs to: a cycle through two tables.
  const SQL = `
    CREATE TABLE public.orgs (id int PRIMARY KEY);
    INSERT INTO public.orgs VALUES (1), (2);
    CREATE TABLE public.users (id int PRIMARY KEY, org_id int NOT NULL REFERENCES public.orgs, address_id int);
    CREATE TABLE public.addresses (id int PRIMARY KEY, user_id int NOT NULL REFERENCES public.users);
    ALTER TABLE public.users ADD FOREIGN KEY (address_id) REFERENCES public.addresses DEFERRABLE INITIALLY DEFERRED;
    INSERT INTO public.users VALUES (1, 1, 100), (2, 1, NULL), (3, 2, 300), (4, 1, 300);  -- 4's default address is 3's
    INSERT INTO public.addresses VALUES (100, 1), (101, 2), (102, 1), (300, 3), (400, 4);`;
  const source = sourceFor('rules_two_table_cycle', SQL);
  const rules = 'strict: true\ntables:\n  public.orgs: { id: keep }\n  public.users: { id: keep, org_id: keep, address_id: keep }\n  public.addresses: { id: keep, user_id: keep }\nsubset:\n  public.orgs: "id = 1"\n';

  it('keeps the rows whose references all stay, through the cycle, and only those', async () => {
    const { manifest, location } = await dumpWith(source(), rules);
    const ids = (table: string) => {
      const file = manifest.tables.find((t) => t.table === table)!;
      return readFileSync(join(location, file.file), 'utf8').trim().split('\n').slice(1).map((line) => Number(line.split(',')[0])).sort((a, b) => a - b);
    };
    expect(ids('users')).toEqual([1, 2]);
    expect(ids('addresses')).toEqual([100, 101, 102]);
  }, 60_000);
});

describe('a foreign key between columns of different collations', () => {
  const SQL = `
    CREATE TABLE public.codes (code text COLLATE "C" PRIMARY KEY);
    INSERT INTO public.codes VALUES ('a'), ('b');
    CREATE TABLE public.uses (id int PRIMARY KEY, code text COLLATE "POSIX" REFERENCES public.codes);
    INSERT INTO public.uses VALUES (1, 'a'), (2, 'b');`;
  const source = sourceFor('rules_collations', SQL);

  it('is followed by the subset (compared under the referenced column\'s collation), not failed with 42P22', async () => {
    const rules = 'strict: true\ntables:\n  public.codes: { code: keep }\n  public.uses: { id: keep, code: keep }\nsubset:\n  public.codes: "code = \'a\'"\n';
    const { manifest } = await dumpWith(source(), rules);
    expect(manifest.tables.map((t) => [t.name, t.rows])).toEqual([
      ['public.codes', 1],
      ['public.uses', 1],
    ]);
  });
});

describe('sql, constant and subset expressions the source cannot run', () => {
  const SQL = `
    CREATE TABLE public.accounts (id int PRIMARY KEY, score int, code text);
    INSERT INTO public.accounts VALUES (1, 10, 'not-a-number'), (2, 20, '7');`;
  const source = sourceFor('rules_expressions', SQL);
  const dump = (columns: string, subset = '') => dumpWith(source(), `strict: true\ntables:\n  public.accounts: ${columns}\n${subset}`);

  it('are refused before anything is written, naming the rules file, the column and what is wrong', async () => {
    await expect(dump('{ id: keep, score: { constant: 12x }, code: { sql: "upper(cod)" } }')).rejects.toMatchObject({
      name: 'RulesError',
      message: expect.stringMatching(/^rules file rules\.yaml: /),
      problems: [
        'public.accounts.score: constant does not run: invalid input syntax for type integer: "12x"',
        'public.accounts.code: sql does not run: column "cod" does not exist',
      ],
    });
    await expect(dump('{ id: keep, score: keep, code: keep }', 'subset:\n  public.accounts: "scor > 10"\n')).rejects.toMatchObject({
      name: 'RulesError',
      problems: ['public.accounts: subset where does not run: column "scor" does not exist'],
    });
    expect(readdirSync(source().dir)).toEqual([]);
  });

  it('leaves an error the rows raise as it is, its value withheld from the rules error', async () => {
    await expect(dump('{ id: keep, score: keep, code: keep }', 'subset:\n  public.accounts: "code::int > 5"\n')).rejects.toMatchObject({ code: '22P02' });
    expect(readdirSync(source().dir)).toEqual([]);
  });
});

describe('a relations entry between columns of different kinds (text holding ids to an integer key)', () => {
  const SQL = `
    CREATE TABLE public.people (id int PRIMARY KEY, name text);
    CREATE TABLE public.events (id int PRIMARY KEY, person_ref text);
    INSERT INTO public.people VALUES (1, 'kept'), (2, 'left out');
    INSERT INTO public.events VALUES (10, '1'), (11, '2'), (12, NULL);`;
  const RULES = `
strict: false
tables: {}
relations:
  - { from: public.events.person_ref, to: public.people.id }
subset:
  public.people: "id = 1"
`;
  const source = sourceFor('rules_relation_cast', SQL);

  it('follows the entry where every value converts', async () => {
    const { manifest } = await dumpWith(source(), RULES);
    expect(Object.fromEntries(manifest.tables.map((t) => [t.table, t.rows]))).toEqual({ people: 1, events: 2 });
  });

  it('is refused naming the entry, never the value, where one does not', async () => {
    await source().query("INSERT INTO public.events VALUES (13, 'x-bob-ssn-123')");
    try {
      const error = await dumpWith(source(), RULES).then(() => undefined, (e: unknown) => e as Error);
      expect(error).toMatchObject({ name: 'RulesError' });
      expect(error!.message).toContain(
        'public.events.person_ref: relations entry to public.people.id does not run: a value does not convert to integer (invalid input syntax for type integer: (value withheld; ERROR_DETAIL=true shows it))',
      );
      expect(error!.message).not.toContain('x-bob');

      // An entry into a table that keeps every row is never followed: nothing is cast, the dump goes on.
      const { manifest } = await dumpWith(source(), RULES.replace('public.people: "id = 1"', 'public.events: "id >= 11"'));
      expect(Object.fromEntries(manifest.tables.map((t) => [t.table, t.rows]))).toEqual({ people: 2, events: 3 });
    } finally {
      await source().query('DELETE FROM public.events WHERE id = 13');
    }
  });
});

describe('a relations entry to a column with a length or a precision, or of another type of the same kind', () => {
  // audit.actor (text) holds logins, and text no login is; pay.acct (numeric) holds account ids, and
  // amounts no id is. A value that references no row references no row left out: it stays.
  const SQL = `
    CREATE TABLE public.users (login varchar(5) PRIMARY KEY, created date);
    INSERT INTO public.users VALUES ('alice', '2020-01-01'), ('bob', '2024-02-01');
    CREATE TABLE public.audit (id int PRIMARY KEY, actor text);
    INSERT INTO public.audit VALUES (1, 'alice@example.org'), (2, 'bob'), (3, 'carol'), (4, 'alice');
    CREATE TABLE public.acct (id int PRIMARY KEY, created date);
    INSERT INTO public.acct VALUES (1, '2024-02-01'), (2, '2020-01-01');
    CREATE TABLE public.pay (id int PRIMARY KEY, acct numeric, at timestamp);
    INSERT INTO public.pay VALUES (10, 1, NULL), (11, 1.5, NULL), (12, 2, NULL), (13, 10000000000, NULL);
    CREATE TABLE public.days (day date PRIMARY KEY);
    INSERT INTO public.days VALUES ('2024-02-01'), ('2024-02-02');
    CREATE TABLE public.visits (id int PRIMARY KEY, at timestamp);
    INSERT INTO public.visits VALUES (20, '2024-02-01 00:00'), (21, '2024-02-02 10:30'), (22, '2024-02-02 00:00');
    CREATE DOMAIN public.handle AS varchar(8) CHECK (VALUE ~ '^[a-z]+$');
    CREATE TABLE public.handles (h public.handle PRIMARY KEY);
    INSERT INTO public.handles VALUES ('ann'), ('ben');
    CREATE TABLE public.mentions (id int PRIMARY KEY, who text);
    INSERT INTO public.mentions VALUES (30, 'ann'), (31, 'ben'), (32, 'Ann Smith');
    CREATE TABLE public.codes (code char(3) PRIMARY KEY);
    INSERT INTO public.codes VALUES ('abc'), ('abd');
    CREATE TABLE public.uses (id int PRIMARY KEY, code text);
    INSERT INTO public.uses VALUES (40, 'abc'), (41, 'abd'), (42, 'a');`;
  const RULES = `
strict: false
tables: {}
relations:
  - { from: public.audit.actor, to: public.users.login }
  - { from: public.pay.acct, to: public.acct.id }
  - { from: public.visits.at, to: public.days.day }
  - { from: public.mentions.who, to: public.handles.h }
  - { from: public.uses.code, to: public.codes.code }
`;
  const source = sourceFor('rules_relation_modifier', SQL);
  const keptIds = async (subset: string) => {
    const { manifest, location } = await dumpWith(source(), `${RULES}subset:\n${subset}`);
    const ids = (table: string) => {
      const file = manifest.tables.find((t) => t.table === table)!;
      return readFileSync(join(location, file.file), 'utf8').trim().split('\n').slice(1).map((line) => line.split(',')[0]).sort();
    };
    return Object.fromEntries(['users', 'audit', 'acct', 'pay', 'days', 'visits', 'handles', 'mentions', 'codes', 'uses'].map((t) => [t, ids(t)]));
  };

  it('compares the values as they are: none is cut to the length, rounded to the precision or truncated to a day, to match a row it does not name', async () => {
    // 'alice@example.org' is no login (cut to varchar(5) it was 'alice', a user left out), 1.5 no
    // account (cast to integer it was 2), 2024-02-02 10:30 no day (cast to date it was 2024-02-02);
    // 10000000000 is no account either (cast to integer it failed the dump, out of range), and
    // 'Ann Smith' no handle (cast to the domain it failed the dump on the domain's CHECK); 'abd'
    // is a code left out, 'a' none (cast to char(1), every value was 'a').
    const subset = `  public.users: "created >= date '2024-01-01'"\n  public.acct: "created >= date '2024-01-01'"\n  public.days: "day = date '2024-02-01'"\n  public.handles: "h = 'ann'"\n  public.codes: "code = 'abc'"\n`;
    expect(await keptIds(subset)).toEqual({
      users: ['bob'],
      audit: ['1', '2', '3'],
      acct: ['1'],
      pay: ['10', '11', '13'],
      days: ['2024-02-01'],
      visits: ['20', '21'],
      handles: ['ann'],
      mentions: ['30', '32'],
      codes: ['abc'],
      uses: ['40', '42'],
    });
    // Kept by a condition of its own, 'alice@example.org' pulls in no user.
    expect((await keptIds(`  public.users: "created >= date '2024-01-01'"\n  public.audit: "id = 1"\n`)).users).toEqual(['bob']);
  });
});

describe('an sql expression that fails on a row during its COPY', () => {
  const SQL = `
    CREATE TABLE public.ok (id int PRIMARY KEY);
    INSERT INTO public.ok VALUES (1);
    CREATE TABLE public.acct (id int PRIMARY KEY, bal int, ref text, note text);
    INSERT INTO public.acct VALUES (1, 10, 'A-7', 'n'), (2, 0, 'A-secret-4111', 'n');`;
  const source = sourceFor('rules_copy_failure', SQL);
  const dump = (columns: string, jobs = 1) =>
    writeSnapshot({
      date: '2024-01-05',
      sourceDatabaseUrl: source().url,
      snapshotDir: source().dir,
      tables: [],
      excludeTables: [],
      rules: parseRules(`strict: true\ntables:\n  public.ok: { id: keep }\n  public.acct: ${columns}\n`, 'rules.yaml'),
      jobs,
    }).then(
      () => undefined,
      (e: unknown) => e,
    );

  it('names the table and the columns its sql rules mask, keeping the SQLSTATE, never the value', async () => {
    for (const jobs of [1, 2]) {
      const division = await dump('{ id: keep, bal: { sql: "100 / bal" }, ref: keep, note: { sql: "upper(note)" } }', jobs);
      expect(division).toMatchObject({ code: '22012' });
      expect(describeFailure(division, { detail: false })).toEqual({ error: 'division by zero (table public.acct, columns masked by sql: bal, note)', code: '22012' });

      const cast = await dump(`{ id: keep, bal: keep, ref: { sql: "split_part(ref, '-', 2)::int" }, note: keep }`, jobs);
      expect(cast).toMatchObject({ code: '22P02' });
      const described = describeFailure(cast, { detail: false });
      expect(described.error).toBe('invalid input syntax for type integer: (value withheld; ERROR_DETAIL=true shows it) (table public.acct, columns masked by sql: ref)');
      expect(described.error).not.toContain('secret');
      expect(readdirSync(source().dir)).toEqual([]);
    }
  });
});

describe("masking rules on a column whose domain has a CHECK", () => {
  // EXPLAIN does not evaluate a domain's CHECK: a strategy whose values the domain refuses passed
  // the checks and failed every attempt's COPY, naming no table or column.
  const SQL = `
    CREATE DOMAIN public.corp_email AS text CHECK (VALUE LIKE '%@corp.example');
    CREATE DOMAIN public.staff_email AS public.corp_email;
    CREATE TABLE public.staff (id int PRIMARY KEY, mail public.corp_email, alt public.staff_email, aliases public.corp_email[], note text);
    INSERT INTO public.staff VALUES (1, NULL, NULL, NULL, 'n'), (2, 'secret.b@corp.example', 'secret.c@corp.example', '{secret.d@corp.example}', 'n');`;
  const source = sourceFor('rules_domain_check', SQL);
  const KEY = 'domain spec key 0123';
  const dump = (columns: string) => dumpWith(source(), `strict: true\ntables:\n  public.staff: ${columns}\n`, KEY).then(() => undefined, (e: unknown) => e as Error & { problems?: string[] });
  const check = (domain = 'corp_email') => `value for domain ${domain} violates check constraint "corp_email_check"`;

  it('refuses a strategy or a constant that gives values the domain refuses, at any depth or in an array, naming table and column, never a value', async () => {
    const error = await dump(`{ id: keep, mail: email, alt: { constant: "nobody" }, aliases: { sql: "ARRAY[note]" }, note: keep }`);
    expect(error).toMatchObject({ name: 'RulesError' });
    expect(error!.problems).toEqual([
      `public.staff.mail: email gives a value its domain refuses (${check()})`,
      `public.staff.alt: constant gives a value its domain refuses (${check('staff_email')})`,
      `public.staff.aliases: sql gives a value its domain refuses (${check()})`,
    ]);
    expect(error!.message).not.toContain('secret');
    expect(error!.message).not.toContain('example.com');
    expect(readdirSync(source().dir)).toEqual([]);
    // A constant is checked without reading rows: on an empty table too.
    await source().query('CREATE TABLE public.empty (id int PRIMARY KEY, mail public.corp_email); INSERT INTO public.empty VALUES (1, NULL)');
    try {
      const empty = await dumpWith(source(), 'strict: false\ntables:\n  public.empty: { mail: { constant: nobody } }\n').then(() => undefined, (e: unknown) => e as Error & { problems?: string[] });
      expect(empty?.problems).toEqual([`public.empty.mail: constant gives a value its domain refuses (${check()})`]);
    } finally {
      await source().query('DROP TABLE public.empty');
    }
  });

  it('dumps rules whose values the domain takes', async () => {
    const rules = `{ id: keep, mail: { sql: "'user' || id || '@corp.example'" }, alt: { constant: "x@corp.example" }, aliases: null, note: keep }`;
    expect(await dump(rules)).toBeUndefined();
    const { manifest, location } = await dumpWith(source(), `strict: true\ntables:\n  public.staff: ${rules}\n`, KEY);
    expect(readFileSync(join(location, manifest.tables[0].file), 'utf8').trim().split('\n')).toEqual(['id,mail,alt,aliases,note', '1,user1@corp.example,x@corp.example,,n', '2,user2@corp.example,x@corp.example,,n']);
    // Tried on the rows the COPY reads: a row the subset leaves out is not.
    const leftOut = `{ id: keep, mail: { sql: "CASE WHEN id = 2 THEN 'refused' ELSE mail END" }, alt: keep, aliases: keep, note: keep }`;
    await expect(dump(`${leftOut}\nsubset:\n  public.staff: "id = 1"`)).resolves.toBeUndefined();
    expect((await dump(leftOut))?.problems).toEqual([`public.staff.mail: sql gives a value its domain refuses (${check()})`]);
  });
});
