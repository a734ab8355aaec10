import { Client } from 'pg';
import { createDatabase, type TestDatabase } from '../../../../test/support/databases';
import { MASKING_RULES_YAML, MASKING_SCHEMA_SQL } from '../../../../test/support/masking-fixture';
import { readRulesCatalog, type RulesCatalog } from './rules-catalog';
import { parseRules } from './rules-file';
import { planRules } from './rules-plan';
import { suggestRules } from './rules-suggest';

let db: TestDatabase;
let catalog: RulesCatalog;
/** The tables of these names in schema public, as the list of dumped tables that plan checks against. */
function publicTables(...names: string[]): { schema: string; name: string }[] {
  return names.map((name) => ({ schema: 'public', name }));
}
const ALL = publicTables('customers', 'orders', 'order_lines', 'shipments', 'audit_log');

const plan = (yaml: string, dumped = ALL) => planRules(parseRules(yaml, 'rules.yaml'), catalog, dumped);
/** The fixture's rules with one line replaced. */
const edited = (from: string, to: string) => {
  expect(MASKING_RULES_YAML).toContain(from);
  return MASKING_RULES_YAML.replace(from, to);
};

beforeAll(async () => {
  db = await createDatabase(
    'rules_plan',
    MASKING_SCHEMA_SQL +
      'ALTER TABLE public.audit_log ADD COLUMN ip inet, ADD COLUMN total int GENERATED ALWAYS AS (id * 2) STORED;' +
      // A unique expression index: indkey says 0 for lower(action).
      'CREATE UNIQUE INDEX audit_log_action_key ON public.audit_log (lower(action));' +
      // Domains over domains, and text columns too short for what email and hash write.
      'CREATE DOMAIN short_text AS varchar(20); CREATE DOMAIN contact_code AS short_text CHECK (VALUE <> \'\');' +
      'CREATE DOMAIN address AS text; CREATE DOMAIN work_address AS address;' +
      'CREATE TABLE public.contacts (work_email work_address, short_email varchar(36), fit_email varchar(37), code contact_code,' +
      ' md5_token char(32), pin_token varchar(31), note contact_code);' +
      // Two ends of a key of different lengths: a keyed value cut at one end only.
      'CREATE TABLE public.accounts (token varchar(40) PRIMARY KEY, owner varchar(12) UNIQUE);' +
      'CREATE TABLE public.sessions (token text REFERENCES public.accounts (token), owner text REFERENCES public.accounts (owner));' +
      'CREATE TABLE public.logins (token varchar(40) REFERENCES public.accounts (token));' +
      // NOT NULL on a domain, and on a domain under another.
      'CREATE DOMAIN required_text AS text NOT NULL; CREATE DOMAIN required_note AS required_text;' +
      'CREATE TABLE public.notes (body required_text, memo required_note, plain text);' +
      // Relations between a uuid or bytea key and its text form.
      'CREATE TABLE public.devices (id uuid PRIMARY KEY, serial bytea UNIQUE);' +
      'CREATE TABLE public.device_logs (device_id text, serial_hex varchar(80), same_id uuid, same_serial bytea);' +
      // A unique index on one partition only, and NULLS NOT DISTINCT (PostgreSQL 15).
      'CREATE TABLE public.events (id int, code text, at date) PARTITION BY RANGE (at);' +
      "CREATE TABLE public.events_2024 PARTITION OF public.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');" +
      'CREATE UNIQUE INDEX events_2024_code_key ON public.events_2024 (code);' +
      'CREATE TABLE public.badges (holder text UNIQUE NULLS NOT DISTINCT, spare text UNIQUE);' +
      // NOT NULL on one partition only, and on a partition two levels down attached with its own column order.
      'CREATE TABLE public.calls (id int, region text, note text, memo text, detail text) PARTITION BY LIST (region);' +
      "CREATE TABLE public.calls_eu PARTITION OF public.calls FOR VALUES IN ('eu'); ALTER TABLE public.calls_eu ALTER COLUMN note SET NOT NULL;" +
      "CREATE TABLE public.calls_us PARTITION OF public.calls FOR VALUES IN ('us') PARTITION BY LIST (id);" +
      'CREATE TABLE public.calls_us_1 (memo text NOT NULL, detail text, note text, region text, id int);' +
      'ALTER TABLE public.calls_us ATTACH PARTITION public.calls_us_1 FOR VALUES IN (1);' +
      // A case-sensitive unique key that a citext column is declared to join.
      'CREATE TABLE public.members (username text UNIQUE, nickname text); CREATE TABLE public.member_logins (username citext, nickname citext);' +
      // A key under a case-insensitive ICU collation: 'Alice.Smith' and 'alice.smith' join.
      "CREATE COLLATION case_insensitive (provider = icu, locale = 'und-u-ks-level2', deterministic = false);" +
      'CREATE TABLE public.ci_users (login text COLLATE case_insensitive PRIMARY KEY, handle text UNIQUE);' +
      'CREATE TABLE public.ci_posts (author text COLLATE case_insensitive REFERENCES public.ci_users (login), handle text REFERENCES public.ci_users (handle));' +
      // A unique phone number (hash suggested) that another table references (phone suggested).
      'CREATE TABLE public.phones (phone text UNIQUE); CREATE TABLE public.sms_log (phone text REFERENCES public.phones (phone), sent_at date);' +
      // Foreign keys to and from stored generated columns, which the environment computes from the masked row.
      'CREATE TABLE public.users (id int PRIMARY KEY, email text NOT NULL, email_norm text GENERATED ALWAYS AS (lower(email)) STORED UNIQUE);' +
      'CREATE TABLE public.user_orders (id int PRIMARY KEY, user_email text REFERENCES public.users (email_norm));' +
      'CREATE TABLE public.mailboxes (email text UNIQUE);' +
      'CREATE TABLE public.mail_rules (id int PRIMARY KEY, sender_email text, sender_norm text GENERATED ALWAYS AS (lower(sender_email)) STORED REFERENCES public.mailboxes (email));' +
      // Unique keys on generated columns: directly, and through an expression index over one.
      'CREATE TABLE public.people (id int PRIMARY KEY, ssn text, ssn_digits text GENERATED ALWAYS AS (replace(ssn, \'-\', \'\')) STORED UNIQUE,' +
      ' badge text, badge_upper text GENERATED ALWAYS AS (upper(badge)) STORED, nickname text);' +
      'CREATE UNIQUE INDEX people_badge_key ON public.people (lower(badge_upper));' +
      // NOT NULL columns for { constant: null }.
      'CREATE TABLE public.staff (id int PRIMARY KEY, ssn text NOT NULL, nickname text);' +
      // Keys a unique index does not show: an exclusion constraint, an expression over a jsonb
      // document, an expression and a WHERE that turn NULLs into one value or let more rows in.
      'CREATE EXTENSION IF NOT EXISTS btree_gist;' +
      'CREATE TABLE public.rooms (id int PRIMARY KEY, nick text, spare text, EXCLUDE USING gist (nick WITH =));' +
      'CREATE TABLE public.profiles (id int PRIMARY KEY, doc jsonb, extra jsonb); CREATE UNIQUE INDEX profiles_email_key ON public.profiles ((doc->>\'email\'));' +
      'CREATE TABLE public.handles (id int PRIMARY KEY, handle text, plain text UNIQUE, tenant int, deleted_at date, note text);' +
      "CREATE UNIQUE INDEX handles_handle_key ON public.handles ((coalesce(handle, '')));" +
      'CREATE UNIQUE INDEX handles_active_tenant_key ON public.handles (tenant) INCLUDE (note) WHERE deleted_at IS NULL;' +
      // Unique keys that hold a kept unique key: rows differ there whatever the other columns become.
      'CREATE TABLE public.member (id int PRIMARY KEY, org int, code text UNIQUE, display_name text, nick text, alias text,' +
      ' UNIQUE (id, display_name), UNIQUE (org, nick), UNIQUE (code, alias));' +
      // Inheritance: a parent with two children, which the dump reads each on its own (ONLY).
      'CREATE TABLE public.ev (id int PRIMARY KEY, who text); CREATE TABLE public.ev_2020 () INHERITS (public.ev); CREATE TABLE public.ev_2021 () INHERITS (public.ev);' +
      'CREATE VIEW public.staff_view AS SELECT id FROM public.staff; CREATE MATERIALIZED VIEW public.staff_counts AS SELECT count(*) FROM public.staff;',
  );
  const client = new Client({ connectionString: db.url });
  await client.connect();
  catalog = await readRulesCatalog(client).finally(() => client.end());
});

afterAll(async () => {
  await db?.drop();
});

describe('rules checked against the source catalog', () => {
  it('strict mode refuses a column without a rule by name, and leaves generated columns to the environment', () => {
    const result = plan(MASKING_RULES_YAML);
    expect(result.problems).toEqual(['public.audit_log.ip: no rule (strict mode needs one for every dumped column)']);
    expect(result.keyed).toBe(true);
    expect(result.tables.find((t) => t.table.name === 'audit_log')!.columns.map((c) => c.column.name)).toEqual(['id', 'actor_email', 'action']);
  });

  it('refuses a masking rule on a generated column, which the environment computes from the dumped ones, and accepts keep there', () => {
    const masked = edited('public.audit_log: { id: keep, actor_email: email, action: keep }', 'public.audit_log: { id: keep, actor_email: email, action: keep, ip: keep, total: redact }');
    expect(plan(masked).problems).toEqual([
      'public.audit_log.total: a generated column, which the dump leaves out and the environment computes from the dumped columns, so redact here would mask nothing; give the rules to the columns it is computed from (or write keep)',
    ]);
    expect(plan(masked.replace('total: redact', 'total: keep')).problems).toEqual([]);
  });

  it('keeps unruled columns as they are when not strict, and ignores tables that are not dumped', () => {
    const result = plan(edited('strict: true', 'strict: false'), ALL.slice(0, 2));
    expect(result.problems).toEqual([]);
    expect(plan(edited('strict: true', 'strict: false')).tables.find((t) => t.table.name === 'audit_log')!.columns[3].strategy).toEqual({ kind: 'keep' });
  });

  it('refuses rules naming a table or column that does not exist, in either mode', () => {
    const yaml = edited('strict: true', 'strict: false').replace('  public.orders:', '  public.gone: { x: keep }\n  public.orders:').replace('placed_at: keep', 'placed_at: keep, shipped_at: keep');
    expect(plan(yaml).problems).toEqual([
      'public.gone: the rules name a table that does not exist',
      'public.orders.shipped_at: the rules name a column that does not exist',
    ]);
  });

  it('refuses a strategy that can repeat values on a column a unique expression index reads', () => {
    expect(plan(edited('action: keep', 'action: redact')).problems).toContain(
      'public.audit_log.action: redact can give two rows the same value, and the column is under a primary key or UNIQUE (audit_log_action_key)',
    );
  });

  it('refuses name, phone, redact and constant under a primary key or UNIQUE, naming the column and the key', () => {
    const yaml = edited('api_token: hash', 'api_token: redact').replace('    id: keep\n    email: email', '    id: { constant: 1 }\n    email: name');
    expect(plan(yaml, ALL.slice(0, 1)).problems).toEqual([
      'public.customers.id: constant can give two rows the same value, and the column is under a primary key or UNIQUE (customers_pkey)',
      'public.customers.email: name can give two rows the same value, and the column is under a primary key or UNIQUE (customers_email_key)',
      'public.customers.api_token: redact can give two rows the same value, and the column is under a primary key or UNIQUE (customers_api_token_key)',
      'public.customers.referred_by (keep) references public.customers.id (constant) through customers_referred_by_fkey: both need the same strategy so masked keys still join',
    ]);
  });

  it("refuses a strategy that repeats values on a column a partition's own unique index holds, and null under NULLS NOT DISTINCT", () => {
    const rules = `strict: true
tables:
  public.events: { id: keep, code: redact, at: keep }
  public.badges: { holder: null, spare: null }
`;
    expect(plan(rules, publicTables('events', 'badges')).problems).toEqual([
      'public.events.code: redact can give two rows the same value, and the column is under a primary key or UNIQUE (events_2024_code_key)',
      'public.badges.holder: null gives every row the same NULL, and the column is under a UNIQUE NULLS NOT DISTINCT (badges_holder_key)',
    ]);
  });

  it('refuses a reference whose two ends mask differently, naming both, for declared keys and relations', () => {
    const result = plan(edited('customer_email: email', 'customer_email: hash').replace('actor_email: email', 'actor_email: keep'));
    expect(result.problems).toEqual(
      expect.arrayContaining([
        'public.orders.customer_email (hash) references public.customers.email (email) through orders_customer_email_fkey: both need the same strategy so masked keys still join',
        'public.audit_log.actor_email (keep) references public.customers.email (email) through relations: both need the same strategy so masked keys still join',
      ]),
    );
  });

  it('refuses null on NOT NULL, strategies that do not fit the type, and review', () => {
    const yaml = edited('full_name: name', 'full_name: null').replace('score: { sql: "round(score, -1)" }', 'score: email').replace('tier: { constant: gold }', 'tier: review');
    expect(plan(yaml, ALL.slice(0, 1)).problems).toEqual([
      'public.customers.full_name: null on a NOT NULL column',
      'public.customers.tier: marked review; decide its strategy',
      'public.customers.score: email needs a text column (text, varchar, char, citext), not numeric',
    ]);
  });

  it('refuses null on a column whose domain, or a domain under it, is NOT NULL', () => {
    const rules = 'strict: true\ntables:\n  public.notes: { body: null, memo: null, plain: null }\n';
    expect(plan(rules, [{ schema: 'public', name: 'notes' }]).problems).toEqual(['public.notes.body: null on a NOT NULL column', 'public.notes.memo: null on a NOT NULL column']);
  });

  it('refuses null on a column of a partitioned table that is NOT NULL on one of its partitions, at any depth', () => {
    const rules = 'strict: true\ntables:\n  public.calls: { id: keep, region: keep, note: null, memo: null, detail: null }\n';
    expect(plan(rules, [{ schema: 'public', name: 'calls' }]).problems).toEqual(['public.calls.note: null on a NOT NULL column', 'public.calls.memo: null on a NOT NULL column']);
  });

  it('looks through domains over domains, and refuses email and hash where the column cannot hold them', () => {
    const contacts = [{ schema: 'public', name: 'contacts' }];
    const rules = `strict: true
tables:
  public.contacts: { work_email: email, short_email: email, fit_email: email, code: hash, md5_token: hash, pin_token: hash, note: redact }
`;
    expect(plan(rules, contacts).problems).toEqual([
      'public.contacts.short_email: email writes 37 characters (user_<20 hex>@example.com), more than character varying(36) holds; use hash or sql',
      'public.contacts.code: hash needs at least 32 characters (of its 64 hex digits) to keep values distinct; contact_code holds 20',
      'public.contacts.pin_token: hash needs at least 32 characters (of its 64 hex digits) to keep values distinct; character varying(31) holds 31',
    ]);
    // rules init leaves to a person what the check would refuse.
    const suggested = parseRules(suggestRules(catalog), 'init.yaml').tables.find((t) => t.table.name === 'contacts')!;
    expect(Object.fromEntries(suggested.columns)).toMatchObject({ work_email: { kind: 'email' }, short_email: { kind: 'review' }, fit_email: { kind: 'email' }, md5_token: { kind: 'hash' }, pin_token: { kind: 'review' } });
  });

  it('refuses hash and name where the two ends of a reference would cut the value to different lengths', () => {
    const tables = publicTables('accounts', 'sessions', 'logins');
    const rules = `strict: true
tables:
  public.accounts: { token: hash, owner: name }
  public.sessions: { token: hash, owner: name }
  public.logins: { token: hash }
`;
    // logins.token is varchar(40) like accounts.token: both keep the same 40 digits, and join.
    expect(plan(rules, tables).problems).toEqual([
      'public.accounts.owner: name can give two rows the same value, and the column is under a primary key or UNIQUE (accounts_owner_key)',
      'public.sessions.owner (text) references public.accounts.owner (character varying(12)) through sessions_owner_fkey: name would be cut to different lengths at the two ends, and the masked keys would no longer join; give both columns the same length',
      'public.sessions.token (text) references public.accounts.token (character varying(40)) through sessions_token_fkey: hash would be cut to different lengths at the two ends, and the masked keys would no longer join; give both columns the same length',
    ]);
  });

  it('refuses hash on a relation whose two ends are of different base types (uuid or bytea and text), naming both', () => {
    const tables = publicTables('devices', 'device_logs');
    const rules = `strict: true
tables:
  public.devices: { id: hash, serial: hash }
  public.device_logs: { device_id: hash, serial_hex: hash, same_id: hash, same_serial: hash }
relations:
  - { from: public.device_logs.device_id, to: public.devices.id }
  - { from: public.device_logs.serial_hex, to: public.devices.serial }
  - { from: public.device_logs.same_id, to: public.devices.id }
  - { from: public.device_logs.same_serial, to: public.devices.serial }
`;
    expect(plan(rules, tables).problems).toEqual([
      'public.device_logs.device_id (text) references public.devices.id (uuid) through relations: hash masks text and uuid differently, and the masked keys would no longer join; give both columns the same type',
      'public.device_logs.serial_hex (character varying(80)) references public.devices.serial (bytea) through relations: hash masks text and bytea differently, and the masked keys would no longer join; give both columns the same type',
    ]);
  });

  it('refuses a keyed strategy that folds case on a case-sensitive unique column joined to a citext one', () => {
    const tables = publicTables('members', 'member_logins');
    const rules = `strict: true
tables:
  public.members: { username: hash, nickname: hash }
  public.member_logins: { username: hash, nickname: hash }
relations:
  - { from: public.member_logins.username, to: public.members.username }
  - { from: public.member_logins.nickname, to: public.members.nickname }
`;
    // 'Bob' and 'bob' are two members; lower-cased, one hash for both, and the UNIQUE fails in the environment.
    expect(plan(rules, tables).problems).toEqual([
      'public.members.username: hash masks it on its lower-cased value (it is joined to a citext column), but it is under a case-sensitive primary key or UNIQUE, so two rows differing only in case would get the same value; make it citext too, or leave out the relation if the two are not joined case-insensitively',
    ]);
  });

  it('refuses a keyed strategy on a reference compared under a nondeterministic collation', () => {
    const tables = publicTables('ci_users', 'ci_posts');
    const rules = (strategy: string) => `strict: true
tables:
  public.ci_users: { login: ${strategy}, handle: hash }
  public.ci_posts: { author: ${strategy}, handle: hash }
`;
    expect(plan(rules('hash'), tables).problems).toEqual([
      'public.ci_posts.author references public.ci_users.login through ci_posts_author_fkey under the nondeterministic collation public.case_insensitive: values that join there without being equal (in case or accents) would get masked values that no longer join; use keep or a strategy that does not derive from the value at both ends',
    ]);
    expect(plan(rules('keep'), tables).problems).toEqual([]);
  });

  it('names a partition in the rules as the partition of its table, not as a table that does not exist', () => {
    const rules = `strict: false
tables:
  public.events_2024: { code: hash }
subset:
  public.events_2024: "true"
`;
    expect(plan(rules, [{ schema: 'public', name: 'events' }]).problems).toEqual([
      'public.events_2024: the rules name a partition of public.events; the dump reads it through public.events, so name that table instead',
      'public.events_2024: subset names a partition of public.events; the dump reads it through public.events, so name that table instead',
    ]);
  });

  it('takes no strategy for a generated end of a foreign key, so a personal column at the other end is masked, not forced to keep', () => {
    const tables = publicTables('users', 'user_orders', 'mailboxes', 'mail_rules');
    const rules = `strict: true
tables:
  public.users: { id: keep, email: email }
  public.user_orders: { id: keep, user_email: email }
  public.mailboxes: { email: email }
  public.mail_rules: { id: keep, sender_email: email }
`;
    // user_orders.user_email references users.email_norm (lower(email)); mail_rules.sender_norm
    // (lower(sender_email)) references mailboxes.email. Read as keep, both ends were refused.
    expect(plan(rules, tables).problems).toEqual([]);
    // What rules init suggests for these tables is what the check accepts.
    const suggested = parseRules(suggestRules(catalog), 'init.yaml');
    const columnsOf = (name: string) => Object.fromEntries(suggested.tables.find((t) => t.table.name === name)!.columns);
    expect(columnsOf('users')).toEqual({ id: { kind: 'keep' }, email: { kind: 'email' } });
    expect(columnsOf('user_orders')).toEqual({ id: { kind: 'keep' }, user_email: { kind: 'email' } });
    expect(planRules(suggested, catalog, tables).problems).toEqual([]);
  });

  it('refuses a strategy that repeats values on a column a unique generated column is computed from', () => {
    const rules = (ssn: string, badge: string) => `strict: true\ntables:\n  public.people: { id: keep, ssn: ${ssn}, badge: ${badge}, nickname: redact }\n`;
    // ssn_digits (UNIQUE) is replace(ssn, '-', ''): '123-45-6789' and '987-65-4321' both become xxxxxxxxx.
    // badge_upper is read by a unique expression index, lower(badge_upper). nickname is under no key.
    expect(plan(rules('redact', 'name'), publicTables('people')).problems).toEqual([
      'public.people.ssn: redact can give two rows the same value, and the column is under a primary key or UNIQUE (people_ssn_digits_key)',
      'public.people.badge: name can give two rows the same value, and the column is under a primary key or UNIQUE (people_badge_key)',
    ]);
    expect(plan(rules('hash', 'hash'), publicTables('people')).problems).toEqual([]);
    // rules init suggests hash, not redact, for the ssn it would have suggested redact for.
    const suggested = parseRules(suggestRules(catalog), 'init.yaml').tables.find((t) => t.table.name === 'people')!;
    expect(suggested.columns.get('ssn')).toEqual({ kind: 'hash' });
  });

  it('refuses { constant: null } where null is refused: NOT NULL on the column, its domain or a partition, and UNIQUE NULLS NOT DISTINCT', () => {
    const rules = `strict: true
tables:
  public.staff: { id: keep, ssn: { constant: null }, nickname: { constant: null } }
  public.notes: { body: { constant: null }, memo: keep, plain: keep }
  public.calls: { id: keep, region: keep, note: { constant: null }, memo: keep, detail: keep }
  public.badges: { holder: { constant: null }, spare: { constant: null } }
`;
    // spare: NULLs are distinct under a plain UNIQUE, as for null.
    expect(plan(rules, publicTables('staff', 'notes', 'calls', 'badges')).problems).toEqual([
      'public.staff.ssn: constant null on a NOT NULL column',
      'public.notes.body: constant null on a NOT NULL column',
      'public.calls.note: constant null on a NOT NULL column',
      'public.badges.holder: constant null gives every row the same NULL, and the column is under a UNIQUE NULLS NOT DISTINCT (badges_holder_key)',
    ]);
  });

  it('refuses a strategy that repeats values under an exclusion constraint, naming it', () => {
    const rules = (nick: string) => `strict: true\ntables:\n  public.rooms: { id: keep, nick: ${nick}, spare: { constant: same } }\n`;
    expect(plan(rules('{ constant: same }'), publicTables('rooms')).problems).toEqual([
      'public.rooms.nick: constant can give two rows the same value, and the column is under an exclusion constraint (rooms_nick_excl)',
    ]);
    // A NULL makes the operator NULL: no conflict, as under a UNIQUE.
    expect(plan(rules('null'), publicTables('rooms')).problems).toEqual([]);
    expect(plan(rules('hash'), publicTables('rooms')).problems).toEqual([]);
  });

  it('refuses a jsonb path strategy that repeats values when the column is under a unique key', () => {
    const rules = (email: string) => `strict: true\ntables:\n  public.profiles: { id: keep, doc: { jsonb: { email: ${email}, name: keep } }, extra: { jsonb: { email: redact } } }\n`;
    expect(plan(rules('redact'), publicTables('profiles')).problems).toEqual([
      'public.profiles.doc: jsonb path email (redact) can give two rows the same value, and the column is under a primary key or UNIQUE (profiles_email_key)',
    ]);
    // JSON null is a value: two documents that differed only there become equal.
    expect(plan(rules('{ constant: null }'), publicTables('profiles')).problems).toEqual([
      'public.profiles.doc: jsonb path email (constant) can give two rows the same value, and the column is under a primary key or UNIQUE (profiles_email_key)',
    ]);
    expect(plan(rules('email'), publicTables('profiles')).problems).toEqual([]);
    expect(plan(rules('hash'), publicTables('profiles')).problems).toEqual([]);
  });

  it('refuses null on a column a unique expression or WHERE reads, where NULLs can become one value, and accepts it on a plain key or INCLUDE column', () => {
    const rules = (columns: string) => `strict: true\ntables:\n  public.handles: { id: keep, ${columns} }\n`;
    expect(plan(rules('handle: null, plain: null, tenant: null, deleted_at: { constant: null }, note: null'), publicTables('handles')).problems).toEqual([
      "public.handles.handle: null gives every row the same NULL, and the column is read by an expression or WHERE of a primary key or UNIQUE (handles_handle_key), which can make the NULLs one value (coalesce(x, '')) or let more rows in",
      "public.handles.deleted_at: constant null gives every row the same NULL, and the column is read by an expression or WHERE of a primary key or UNIQUE (handles_active_tenant_key), which can make the NULLs one value (coalesce(x, '')) or let more rows in",
    ]);
    // An INCLUDE column is no part of what rows must not share: any strategy may repeat there.
    expect(plan(rules('handle: keep, plain: keep, note: name, tenant: keep, deleted_at: keep'), publicTables('handles')).problems).toEqual([]);
    expect(plan(rules('handle: keep, plain: keep, note: { constant: same }, tenant: keep, deleted_at: keep'), publicTables('handles')).problems).toEqual([]);
  });

  it('accepts a strategy that repeats values under a unique key that holds a kept unique key, whose rows differ anyway', () => {
    const rules = (id: string) => `strict: true\ntables:\n  public.member: { id: ${id}, org: keep, code: keep, display_name: name, nick: name, alias: name }\n`;
    // (id, display_name) holds the kept primary key; (org, nick) holds no unique key; (code, alias)
    // holds code, unique but nullable: two rows with no code may get the same alias.
    expect(plan(rules('keep'), publicTables('member')).problems).toEqual([
      'public.member.nick: name can give two rows the same value, and the column is under a primary key or UNIQUE (member_org_nick_key)',
      'public.member.alias: name can give two rows the same value, and the column is under a primary key or UNIQUE (member_code_alias_key)',
    ]);
    // Once id is masked, nothing says the rows differ.
    expect(plan(rules('{ sql: "id + 1" }'), publicTables('member')).problems).toContain(
      'public.member.display_name: name can give two rows the same value, and the column is under a primary key or UNIQUE (member_id_display_name_key)',
    );
  });

  it('refuses a subset on an inheritance parent unless each of its dumped children has a condition of its own', () => {
    const rules = (subset: string) => `strict: false\nsubset:\n${subset}`;
    expect(plan(rules('  public.ev: "id < 50"\n'), publicTables('ev', 'ev_2020', 'ev_2021')).problems).toEqual([
      'public.ev: subset of an inheritance parent whose children public.ev_2020, public.ev_2021 have no subset condition: the dump reads each table on its own (ONLY), so they would keep every row; give each of them a condition of its own (the same one, if that is what is meant)',
    ]);
    expect(plan(rules('  public.ev: "id < 50"\n  public.ev_2020: "id < 50"\n'), publicTables('ev', 'ev_2020', 'ev_2021')).problems).toEqual([
      'public.ev: subset of an inheritance parent whose children public.ev_2021 have no subset condition: the dump reads each table on its own (ONLY), so they would keep every row; give each of them a condition of its own (the same one, if that is what is meant)',
    ]);
    // A child left out of the dump keeps no rows at all.
    expect(plan(rules('  public.ev: "id < 50"\n  public.ev_2020: "id < 50"\n'), publicTables('ev', 'ev_2020')).problems).toEqual([]);
  });

  it('names a view in the rules as a view, which the dump does not copy', () => {
    const rules = 'strict: false\ntables:\n  public.staff_view: { id: keep }\n  public.staff_counts: { count: keep }\nsubset:\n  public.staff_view: "id < 5"\n';
    expect(plan(rules, publicTables('staff')).problems).toEqual([
      'public.staff_view: the rules name a view, which the dump does not copy',
      'public.staff_counts: the rules name a materialized view, which the dump does not copy',
      'public.staff_view: subset names a view, which the dump does not copy',
    ]);
  });

  it('masks on the lower-cased value for citext and for every column that references one', () => {
    const folded = plan(MASKING_RULES_YAML).tables.flatMap((t) => t.columns.filter((c) => c.foldCase).map((c) => `${t.table.name}.${c.column.name}`));
    expect(folded.sort()).toEqual(['audit_log.actor_email', 'customers.email', 'orders.customer_email']);
  });

  it('rules init leaves both ends of a foreign key to review where it would suggest two strategies', () => {
    const rules = parseRules(suggestRules(catalog), 'init.yaml');
    const columnsOf = (name: string) => Object.fromEntries(rules.tables.find((t) => t.table.name === name)!.columns);
    expect(columnsOf('phones')).toEqual({ phone: { kind: 'review' } });
    expect(columnsOf('sms_log')).toEqual({ phone: { kind: 'review' }, sent_at: { kind: 'keep' } });
    const tables = publicTables('phones', 'sms_log');
    expect(planRules(rules, catalog, tables).problems).toEqual(['public.phones.phone: marked review; decide its strategy', 'public.sms_log.phone: marked review; decide its strategy']);
  });

  it('rules init suggests strategies that the check accepts once review columns are decided', () => {
    const text = suggestRules(catalog);
    expect(text).toContain('strict: true');
    const rules = parseRules(text, 'init.yaml');
    const customers = Object.fromEntries(rules.tables.find((t) => t.table.name === 'customers')!.columns);
    expect(customers).toMatchObject({ id: { kind: 'keep' }, email: { kind: 'email' }, full_name: { kind: 'name' }, phone: { kind: 'phone' }, ssn: { kind: 'redact' }, api_token: { kind: 'hash' }, profile: { kind: 'review' }, created_at: { kind: 'keep' } });
    const problems = planRules(rules, catalog, ALL).problems;
    expect(problems.every((p) => p.includes('marked review'))).toBe(true);
    expect(problems).toContain('public.customers.profile: marked review; decide its strategy');
  });
});
