import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from 'pg';
import { createDatabase, createDumpSource, databaseUrl, type DumpSource, uniqueName } from '../../../test/support/databases';
import { parseRules } from '@app/common/rules';
import { writeSnapshot } from './snapshot-writer';

const DATE = '2024-01-05';

describe('sequences in the manifest', () => {
  let db: DumpSource;
  const reader = uniqueName('dump_seq_reader');

  beforeAll(async () => {
    // The shapes pg_dump output and real schemas have: a sequence no column owns but a default
    // calls, one shared by two tables, identity and serial columns, and a partition's own default.
    db = await createDumpSource(
      'catalog_seq',
      `
      CREATE SEQUENCE public.invoice_no START 1000;
      SELECT setval('public.invoice_no', 1041);
      CREATE TABLE public.invoices (no bigint PRIMARY KEY DEFAULT nextval('public.invoice_no'), memo text);
      CREATE SCHEMA "Ledger";
      CREATE SEQUENCE "Ledger"."Entry Numbers";
      CREATE TABLE public.credits (no bigint DEFAULT nextval('"Ledger"."Entry Numbers"'), amount int);
      CREATE TABLE public.debits (no bigint DEFAULT nextval('"Ledger"."Entry Numbers"'), amount int);
      INSERT INTO public.credits (amount) VALUES (1), (2);
      INSERT INTO public.debits (amount) VALUES (3);
      CREATE TABLE public.tickets (id int GENERATED ALWAYS AS IDENTITY, title text);
      INSERT INTO public.tickets (title) VALUES ('a'), ('b'), ('c');
      CREATE TABLE public.notes (id serial, body text);
      CREATE SEQUENCE public.unused_seq;
      CREATE SEQUENCE public.archive_no START 500;
      CREATE TABLE public.events (id bigint, at date NOT NULL) PARTITION BY RANGE (at);
      CREATE TABLE public.events_old PARTITION OF public.events FOR VALUES FROM ('2000-01-01') TO ('2024-01-01');
      ALTER TABLE public.events_old ALTER COLUMN id SET DEFAULT nextval('public.archive_no');
      INSERT INTO public.events_old (at) VALUES ('2020-01-01');
      CREATE TABLE "Ledger".postings (id int);
      CREATE SEQUENCE "Ledger"."ticket no" START 7000;
      SELECT setval('"Ledger"."ticket no"', 7012);
      CREATE ROLE ${reader} LOGIN;
      GRANT USAGE ON SCHEMA "Ledger" TO ${reader};
      GRANT SELECT ON ALL TABLES IN SCHEMA public, "Ledger" TO ${reader};
      GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO ${reader};
      GRANT SELECT ON "Ledger"."Entry Numbers" TO ${reader};
      `,
    );
  });
  afterAll(async () => {
    await db?.drop();
    await createDatabase('seq_reader_cleanup').then(async (scratch) => {
      await scratch.query(`DROP ROLE IF EXISTS ${reader}`);
      await scratch.drop();
    });
  });

  it('names every sequence the rows draw from, owned or only called by a default, with its value read in the dump', async () => {
    const { manifest } = await writeSnapshot({ date: DATE, sourceDatabaseUrl: db.url, snapshotDir: db.dir, tables: [], excludeTables: [] });
    expect(manifest.sequences).toEqual([
      { sequence: '"Ledger"."Entry Numbers"', table: 'public.credits', schema: 'public', tableName: 'credits', column: 'no', lastValue: '3', isCalled: true },
      { sequence: 'public.archive_no', table: 'public.events', schema: 'public', tableName: 'events', column: 'id', lastValue: '500', isCalled: true },
      { sequence: 'public.invoice_no', table: 'public.invoices', schema: 'public', tableName: 'invoices', column: 'no', lastValue: '1041', isCalled: true },
      { sequence: 'public.notes_id_seq', table: 'public.notes', schema: 'public', tableName: 'notes', column: 'id', lastValue: '1', isCalled: false },
      { sequence: 'public.tickets_id_seq', table: 'public.tickets', schema: 'public', tableName: 'tickets', column: 'id', lastValue: '3', isCalled: true },
    ]);
    const onDisk = JSON.parse(readFileSync(join(db.dir, `prod_snapshot_${manifest.snapshotId}`, 'manifest.json'), 'utf8')) as typeof manifest;
    expect(onDisk.sequences).toEqual(manifest.sequences);
  });

  it('names, in a dump of the whole database, every sequence no column uses (a trigger\'s, the application\'s), as pg_dump sets them all', async () => {
    const { manifest } = await writeSnapshot({ date: DATE, sourceDatabaseUrl: db.url, snapshotDir: db.dir, tables: [], excludeTables: [] });
    expect(manifest.standaloneSequences).toEqual([
      { sequence: '"Ledger"."ticket no"', lastValue: '7012', isCalled: true },
      { sequence: 'public.unused_seq', lastValue: '1', isCalled: false },
    ]);
    const named = await writeSnapshot({ date: DATE, sourceDatabaseUrl: db.url, snapshotDir: db.dir, tables: [{ schema: 'public', name: 'invoices' }], excludeTables: [] });
    expect(named.manifest.standaloneSequences).toBeUndefined();
    // A schema EXCLUDE_TABLES empties keeps its sequences too: the environments may not have it.
    const withoutLedger = await writeSnapshot({ date: DATE, sourceDatabaseUrl: db.url, snapshotDir: db.dir, tables: [], excludeTables: [{ schema: 'Ledger', name: 'postings' }] });
    expect(withoutLedger.manifest.standaloneSequences).toEqual([{ sequence: 'public.unused_seq', lastValue: '1', isCalled: false }]);
  });

  it("leaves out, and names in the log, a sequence no column uses that the dump's role may not read", async () => {
    const url = new URL(db.url);
    url.username = reader;
    url.password = '';
    const log: string[] = [];
    const { manifest } = await writeSnapshot({ date: DATE, sourceDatabaseUrl: url.toString(), snapshotDir: db.dir, tables: [], excludeTables: [], log: (line) => log.push(line) });
    expect(manifest.standaloneSequences).toEqual([{ sequence: 'public.unused_seq', lastValue: '1', isCalled: false }]);
    expect(log).toContain(`left out sequence(s) the dump's role may not read (GRANT SELECT on them to set them in the environments): "Ledger"."ticket no"`);
  });

  it('leaves out a shared sequence only when no dumped table uses it', async () => {
    const only = (names: string[]) =>
      writeSnapshot({ date: DATE, sourceDatabaseUrl: db.url, snapshotDir: db.dir, tables: names.map((name) => ({ schema: 'public', name })), excludeTables: [] });
    expect((await only(['debits'])).manifest.sequences.map((s) => [s.sequence, s.table])).toEqual([['"Ledger"."Entry Numbers"', 'public.debits']]);
    expect((await only(['tickets'])).manifest.sequences.map((s) => s.sequence)).toEqual(['public.tickets_id_seq']);
  });
});

describe('sequences of relations the dump never takes (a view, a foreign table)', () => {
  let db: DumpSource;

  beforeAll(async () => {
    // A view's default numbers the rows inserted through it (into a dumped table); a foreign table's
    // serial or identity column owns its sequence. pg_dump of the database sets all of them.
    db = await createDumpSource(
      'catalog_viewseq',
      `
      CREATE SEQUENCE public.vseq;
      CREATE TABLE public.base (id int PRIMARY KEY, n text);
      CREATE VIEW public.v AS SELECT * FROM public.base;
      ALTER VIEW public.v ALTER COLUMN id SET DEFAULT nextval('public.vseq');
      INSERT INTO public.v (n) SELECT 'x' FROM generate_series(1, 5);
      CREATE SEQUENCE public.view_owned;
      ALTER SEQUENCE public.view_owned OWNED BY public.v.n;
      SELECT setval('public.view_owned', 30);
      CREATE EXTENSION file_fdw;
      CREATE SERVER files FOREIGN DATA WRAPPER file_fdw;
      CREATE FOREIGN TABLE public.ft (id serial, n text) SERVER files OPTIONS (filename '/dev/null');
      SELECT nextval('public.ft_id_seq') FROM generate_series(1, 7);
      CREATE FOREIGN TABLE public.remote_rows (id int GENERATED BY DEFAULT AS IDENTITY, n text) SERVER files OPTIONS (filename '/dev/null');
      SELECT setval('public.remote_rows_id_seq', 12);
      -- One sequence, a dumped table's default and a view's: the table's, listed once.
      CREATE SEQUENCE public.shared_no;
      CREATE TABLE public.numbered (no bigint DEFAULT nextval('public.shared_no'));
      CREATE VIEW public.numbered_view AS SELECT * FROM public.numbered;
      ALTER VIEW public.numbered_view ALTER COLUMN no SET DEFAULT nextval('public.shared_no');
      INSERT INTO public.numbered_view DEFAULT VALUES;
      CREATE TABLE public.kept_local (id serial);
      `,
    );
  });
  afterAll(() => db?.drop());

  const standaloneOfViewsAndForeignTables = [
    { sequence: 'public.ft_id_seq', lastValue: '7', isCalled: true },
    { sequence: 'public.remote_rows_id_seq', lastValue: '12', isCalled: true },
    { sequence: 'public.view_owned', lastValue: '30', isCalled: true },
    { sequence: 'public.vseq', lastValue: '5', isCalled: true },
  ];

  it("names, in a dump of the whole database, the sequence a view's default calls or a view's or foreign table's column owns", async () => {
    const { manifest } = await writeSnapshot({ date: DATE, sourceDatabaseUrl: db.url, snapshotDir: db.dir, tables: [], excludeTables: [] });
    expect(manifest.sequences.map((s) => [s.sequence, s.table])).toEqual([
      ['public.kept_local_id_seq', 'public.kept_local'],
      ['public.shared_no', 'public.numbered'],
    ]);
    expect(manifest.standaloneSequences).toEqual(standaloneOfViewsAndForeignTables);
  });

  it('leaves the sequence of a table EXCLUDE_TABLES leaves out with the environment, whose rows that table keeps', async () => {
    const { manifest } = await writeSnapshot({ date: DATE, sourceDatabaseUrl: db.url, snapshotDir: db.dir, tables: [], excludeTables: [{ schema: 'public', name: 'kept_local' }] });
    expect(manifest.sequences.map((s) => s.sequence)).toEqual(['public.shared_no']);
    expect(manifest.standaloneSequences).toEqual(standaloneOfViewsAndForeignTables);
  });
});

describe('row-level security', () => {
  let db: DumpSource;
  const role = uniqueName('dump_rls');

  beforeAll(async () => {
    db = await createDumpSource(
      'catalog_rls',
      `
      CREATE TABLE public.customers (id int PRIMARY KEY, region text);
      INSERT INTO public.customers SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END FROM generate_series(1, 10) g;
      CREATE TABLE public.plain (id int);
      INSERT INTO public.plain VALUES (1);
      ALTER TABLE public.customers ENABLE ROW LEVEL SECURITY;
      CREATE ROLE ${role} LOGIN;
      CREATE POLICY eu_only ON public.customers FOR SELECT TO ${role} USING (region = 'eu');
      GRANT SELECT ON public.customers, public.plain TO ${role};
      `,
    );
  });
  afterAll(async () => {
    await db?.drop();
    await createDatabase('rls_cleanup').then(async (scratch) => {
      await scratch.query(`DROP ROLE IF EXISTS ${role}`);
      await scratch.drop();
    });
  });

  const asRole = () => {
    const url = new URL(databaseUrl(db.name));
    url.username = role;
    url.password = '';
    return url.toString();
  };

  it('refuses to dump a table the role sees only part of, naming the table and what the role needs', async () => {
    // The policy really filters this role: half the rows (without row_security = off it would ship them silently).
    const client = new Client({ connectionString: asRole() });
    await client.connect();
    try {
      expect((await client.query('SELECT count(*)::int AS n FROM public.customers')).rows).toEqual([{ n: 5 }]);
    } finally {
      await client.end();
    }
    const dump = writeSnapshot({ date: DATE, sourceDatabaseUrl: asRole(), snapshotDir: db.dir, tables: [], excludeTables: [] });
    await expect(dump).rejects.toMatchObject({ code: 'row-security' });
    await expect(dump).rejects.toThrow(/public\.customers .*BYPASSRLS.*owner.*pg_read_all_data plus BYPASSRLS/);
  });

  it('dumps every row once the role has BYPASSRLS', async () => {
    await db.query(`ALTER ROLE ${role} BYPASSRLS`);
    try {
      const { manifest } = await writeSnapshot({ date: DATE, sourceDatabaseUrl: asRole(), snapshotDir: db.dir, tables: [], excludeTables: [] });
      expect(manifest.tables.map(({ name, rows }) => ({ name, rows }))).toEqual([
        { name: 'public.customers', rows: 10 },
        { name: 'public.plain', rows: 1 },
      ]);
    } finally {
      await db.query(`ALTER ROLE ${role} NOBYPASSRLS`);
    }
  });
});

/**
 * A dump of `db` while another session holds `lockSql` for 8 s (as a migration in production may at
 * any moment), with how long it took; the source is dropped afterwards.
 */
async function dumpBehindLock(db: DumpSource, lockSql: string, selection: Pick<Parameters<typeof writeSnapshot>[0], 'tables' | 'excludeTables'>) {
  const blocker = new Client({ connectionString: db.url });
  await blocker.connect();
  try {
    await blocker.query(`BEGIN; ${lockSql}`);
    const release = setTimeout(() => void blocker.query('ROLLBACK'), 8_000);
    const started = Date.now();
    const { manifest } = await writeSnapshot({ date: DATE, sourceDatabaseUrl: db.url, snapshotDir: db.dir, ...selection });
    clearTimeout(release);
    return { took: Date.now() - started, manifest };
  } finally {
    await blocker.end();
    await db.drop();
  }
}

describe('tables TABLES and EXCLUDE_TABLES leave out', () => {
  it('are not waited for: a lock held on one does not hold up the dump of the others', async () => {
    const db = await createDumpSource('catalog_unselected', `CREATE TABLE public.keepme (id int); INSERT INTO public.keepme SELECT generate_series(1, 1000); CREATE TABLE public.busy_log (line text);`);
    const { took, manifest } = await dumpBehindLock(db, 'LOCK TABLE public.busy_log IN ACCESS EXCLUSIVE MODE', { tables: [{ schema: 'public', name: 'keepme' }], excludeTables: [] });
    expect(took).toBeLessThan(5_000);
    expect(manifest.tables.map((t) => [t.name, t.rows])).toEqual([['public.keepme', 1000]]);
  }, 30_000);
});

describe('EXCLUDE_TABLES naming relations the dump never takes', () => {
  it('accepts a view, a materialized view and an extension\'s table, which are no typo', async () => {
    const db = await createDumpSource(
      'catalog_exclude_kinds',
      `CREATE TABLE public.keepme (id int); INSERT INTO public.keepme VALUES (1);
       CREATE VIEW public.keep_view AS SELECT * FROM public.keepme;
       CREATE MATERIALIZED VIEW public.keep_report AS SELECT count(*) FROM public.keepme;
       CREATE TABLE public.extension_owned (id int); ALTER EXTENSION plpgsql ADD TABLE public.extension_owned;`,
    );
    try {
      const excludeTables = ['keep_view', 'keep_report', 'extension_owned'].map((name) => ({ schema: 'public', name }));
      const { manifest } = await writeSnapshot({ date: DATE, sourceDatabaseUrl: db.url, snapshotDir: db.dir, tables: [], excludeTables });
      expect(manifest.tables.map((t) => t.name)).toEqual(['public.keepme']);
    } finally {
      await db.query('ALTER EXTENSION plpgsql DROP TABLE public.extension_owned').catch(() => undefined);
      await db.drop();
    }
  });
});

describe('an inheritance child left out', () => {
  it('is not locked through its parent: a lock held on the child does not hold up the dump, and the dump holds nothing on it', async () => {
    const db = await createDumpSource(
      'catalog_inherit',
      `CREATE TABLE public.parent (id int); INSERT INTO public.parent VALUES (1), (2);
       CREATE TABLE public.child (extra text) INHERITS (public.parent); INSERT INTO public.child VALUES (3, 'personal');`,
    );
    const { took, manifest } = await dumpBehindLock(db, 'LOCK TABLE public.child IN ACCESS EXCLUSIVE MODE', { tables: [], excludeTables: [{ schema: 'public', name: 'child' }] });
    expect(took).toBeLessThan(5_000);
    // The parent's own rows only, as pg_dump's COPY of it has them.
    expect(manifest.tables.map((t) => [t.name, t.rows])).toEqual([['public.parent', 2]]);
  }, 30_000);
});

describe('a partitioned table with a foreign partition (postgres_fdw)', () => {
  it("dumps its local partitions only, as pg_dump does: the remote server's rows are not production's snapshot", async () => {
    // The remote row's doc is a bare string, which a jsonb rule over it would refuse: it must never be read.
    const remote = await createDatabase('catalog_remote', `CREATE TABLE public.events_remote (id int, email text, doc jsonb); INSERT INTO public.events_remote VALUES (1, 'remote@example.com', '"remote"');`);
    const db = await createDumpSource(
      'catalog_fdw',
      `CREATE EXTENSION postgres_fdw;
       CREATE SERVER remote FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '5432', dbname '${remote.name}');
       CREATE USER MAPPING FOR CURRENT_USER SERVER remote OPTIONS (user '${decodeURIComponent(new URL(remote.url).username) || 'root'}');
       CREATE TABLE public.events (id int, email text, doc jsonb) PARTITION BY RANGE (id);
       CREATE FOREIGN TABLE public.events_old PARTITION OF public.events FOR VALUES FROM (0) TO (100) SERVER remote OPTIONS (table_name 'events_remote');
       CREATE TABLE public.events_new PARTITION OF public.events FOR VALUES FROM (100) TO (200);
       INSERT INTO public.events_new VALUES (100, 'local@example.com', '{"note": "ok"}');`,
    );
    try {
      expect(await db.query('SELECT count(*)::int AS n FROM public.events')).toEqual([{ n: 2 }]);
      const plain = await writeSnapshot({ date: DATE, sourceDatabaseUrl: db.url, snapshotDir: db.dir, tables: [], excludeTables: [] });
      expect(plain.manifest.tables.map((t) => [t.name, t.rows])).toEqual([['public.events', 1]]);
      const csv = readFileSync(join(plain.location, plain.manifest.tables[0].file), 'utf8');
      expect(csv).toBe('id,email,doc\n100,local@example.com,"{""note"": ""ok""}"\n');
      // Through the rules' masking and their checks too.
      const rules = parseRules('strict: true\ntables:\n  public.events: { id: keep, email: redact, doc: { jsonb: { note: redact } } }\n', 'rules.yaml');
      const masked = await writeSnapshot({ date: DATE, sourceDatabaseUrl: db.url, snapshotDir: db.dir, tables: [], excludeTables: [], rules });
      expect(readFileSync(join(masked.location, masked.manifest.tables[0].file), 'utf8')).toBe('id,email,doc\n100,xxxxx@xxxxxxx.xxx,"{""note"": ""xx""}"\n');
      // An expression that names the table, which the COPY's read of the local partitions cannot resolve, is refused by the check before anything is written.
      const qualified = parseRules('strict: true\ntables:\n  public.events: { id: keep, email: { sql: "upper(public.events.email)" }, doc: null }\n', 'rules.yaml');
      await expect(writeSnapshot({ date: DATE, sourceDatabaseUrl: db.url, snapshotDir: db.dir, tables: [], excludeTables: [], rules: qualified })).rejects.toMatchObject({ name: 'RulesError' });
    } finally {
      await db.drop();
      await remote.drop();
    }
  });
});

describe('a source that is itself an environment of a pipeline', () => {
  it('never dumps the loaders\' ledger schema db_fanout, which would replace every target\'s own', async () => {
    const db = await createDumpSource(
      'catalog_ledger',
      `CREATE TABLE public.items (id int PRIMARY KEY); INSERT INTO public.items VALUES (1);
       CREATE SCHEMA db_fanout; CREATE TABLE db_fanout.loaded_snapshots (snapshot_id text PRIMARY KEY); INSERT INTO db_fanout.loaded_snapshots VALUES ('20240101-aaaaaaaa');`,
    );
    try {
      const { manifest } = await writeSnapshot({ date: DATE, sourceDatabaseUrl: db.url, snapshotDir: db.dir, tables: [], excludeTables: [] });
      expect(manifest.tables.map((t) => t.name)).toEqual(['public.items']);
    } finally {
      await db.drop();
    }
  });
});
