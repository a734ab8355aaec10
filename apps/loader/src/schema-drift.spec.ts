import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { LoadTriggers } from '@app/common/config';
import type { SnapshotReadyPayload } from '@app/common/contract';
import { describeFailure } from '@app/common/observability';
import { createDatabase, sequenceStates, type TestDatabase } from '../../../test/support/databases';
import { writeSnapshot, type WrittenSnapshot } from '../../dumper/src/snapshot-writer';
import { readyPayloadOf } from '../../../test/support/snapshots';
import { TargetDatabase } from './database/target-database';
import { loadSnapshot } from './snapshot-load';
import { directorySource } from './snapshot-files';
import { TargetSchemaError } from './target-schema';

const SOURCE_SQL = `
  CREATE TABLE public.people (id int PRIMARY KEY, name text NOT NULL, legacy_code text, note text);
  -- serial: a skipped table's sequence is not the environment's either
  CREATE TABLE public.only_in_prod (id serial PRIMARY KEY);
  INSERT INTO public.people VALUES (1, 'Ada', 'A-1', 'it''s "quoted", \\ too'), (2, 'Zoë', NULL, NULL);
  INSERT INTO public.only_in_prod DEFAULT VALUES;
`;
// The environment dropped legacy_code, added a column with a default, and has no only_in_prod.
const DRIFTED_SQL = `CREATE TABLE public.people (id int PRIMARY KEY, name text NOT NULL, note text, added_at date NOT NULL DEFAULT '2024-01-01');`;

describe('SCHEMA_DRIFT', () => {
  let source: TestDatabase;
  let snapshot: WrittenSnapshot;
  const dir = mkdtempSync(join(tmpdir(), 'db-fanout-drift-'));
  const targets: TestDatabase[] = [];
  const payload = (): SnapshotReadyPayload => readyPayloadOf(snapshot);
  const load = async (target: TestDatabase, schemaDrift: 'fail' | 'common-columns', triggers?: LoadTriggers, from?: { snapshot?: WrittenSnapshot; log?: (line: string) => void }) => {
    const database = new TargetDatabase(target.url);
    const written = from?.snapshot ?? snapshot;
    try {
      return await loadSnapshot(database, { snapshot: readyPayloadOf(written), dir: written.location, environment: 'spec', attempt: 1, schemaDrift, triggers, log: from?.log });
    } finally {
      await database.close();
    }
  };
  const target = async (sql: string) => {
    const db = await createDatabase('drift_env', sql);
    targets.push(db);
    return db;
  };

  /** A snapshot of another production, built by `sql`, in a directory of its own. */
  const snapshotOf = async (sql: string) => {
    const prod = await createDatabase('drift_prod', sql);
    targets.push(prod);
    const own = join(dir, prod.name);
    mkdirSync(own);
    return writeSnapshot({ date: '2024-01-05', sourceDatabaseUrl: prod.url, snapshotDir: own, tables: [], excludeTables: [] });
  };

  beforeAll(async () => {
    source = await createDatabase('drift_prod', SOURCE_SQL);
    snapshot = await writeSnapshot({ date: '2024-01-05', sourceDatabaseUrl: source.url, snapshotDir: dir, tables: [], excludeTables: [] });
  });
  afterAll(async () => {
    await Promise.all([source, ...targets].filter(Boolean).map((db) => db.drop()));
    rmSync(dir, { recursive: true, force: true });
  });

  it('leaves no file open when the load fails before a COPY takes it (the staging table refused)', async () => {
    const env = await target(`${DRIFTED_SQL}
      CREATE FUNCTION public.no_staging() RETURNS event_trigger LANGUAGE plpgsql AS $$
        BEGIN IF current_query() LIKE '%db_fanout_drift_%' THEN RAISE EXCEPTION 'no staging tables here'; END IF; END $$;
      CREATE EVENT TRIGGER no_staging ON ddl_command_start WHEN TAG IN ('CREATE TABLE') EXECUTE FUNCTION public.no_staging();`);
    // The snapshot's own files, each stream they open kept: an S3 download or an Object Store
    // consumer left open is the same leak as a file.
    const files = directorySource(snapshot.location);
    const opened: Readable[] = [];
    const source = { ...files, label: snapshot.location, open: async (file: string) => opened[opened.push(await files.open(file)) - 1] };
    const database = new TargetDatabase(env.url);
    try {
      await expect(loadSnapshot(database, { snapshot: payload(), source, environment: 'spec', attempt: 1, schemaDrift: 'common-columns' })).rejects.toThrow('no staging tables here');
    } finally {
      await database.close();
    }
    expect(opened.length).toBeGreaterThan(0);
    expect(opened.filter((stream) => !stream.destroyed)).toEqual([]);
  });

  it('fail (the default) names a column the environment generates as generated, not as missing', async () => {
    const env = await target(`CREATE TABLE public.people (id int PRIMARY KEY, name text NOT NULL, legacy_code text GENERATED ALWAYS AS ('L-' || id) STORED, note text);
      CREATE TABLE public.only_in_prod (id serial PRIMARY KEY);`);
    const error = await load(env, 'fail').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TargetSchemaError);
    expect((error as Error).message).toBe('column(s) public.people."legacy_code" generated in the target, where production stores their values');
  });

  it('fail (the default) names what differs and changes nothing', async () => {
    const env = await target(`${DRIFTED_SQL} INSERT INTO public.people VALUES (9, 'stale', NULL);`);
    const error = await load(env, 'fail').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TargetSchemaError);
    expect((error as Error).message).toContain('table public.only_in_prod does not exist in the target');
    expect(await env.query('SELECT id FROM public.people')).toEqual([{ id: 9 }]);
  });

  it('common-columns loads what both have, defaults the rest, and reports every difference', async () => {
    const env = await target(DRIFTED_SQL);
    const log: string[] = [];
    const result = await load(env, 'common-columns', undefined, { log: (line) => log.push(line) });
    expect(result).toMatchObject({
      kind: 'loaded',
      drift: {
        skippedTables: ['public.only_in_prod'],
        leftOutColumns: ['public.people."legacy_code"'],
        defaultedColumns: ['public.people."added_at"'],
        // The skipped table's serial: the environment has no such sequence.
        unsetSequences: ['public.only_in_prod_id_seq'],
      },
    });
    expect(log).toContain(
      'sequence(s) of production that only a skipped table or a left-out column uses, none of the target\'s loaded columns, left unset: public.only_in_prod_id_seq',
    );
    expect(await env.query('SELECT id, name, note, added_at::text FROM public.people ORDER BY id')).toEqual([
      { id: 1, name: 'Ada', note: 'it\'s "quoted", \\ too', added_at: '2024-01-01' },
      { id: 2, name: 'Zoë', note: null, added_at: '2024-01-01' },
    ]);
    // The ledger keeps the drift: a redelivery that finds the load committed but never announced
    // (the loader died in between) announces it with what it left out.
    const again = await load(env, 'common-columns');
    expect(again).toMatchObject({ kind: 'already-loaded', entry: { announced: false, drift: (result as { drift: unknown }).drift } });
  });

  it("common-columns keeps production's ids in a GENERATED ALWAYS identity column of the environment", async () => {
    const env = await target(DRIFTED_SQL.replace('id int PRIMARY KEY', 'id int GENERATED ALWAYS AS IDENTITY (START WITH 100) PRIMARY KEY'));
    expect(await load(env, 'common-columns')).toMatchObject({ kind: 'loaded', drift: { leftOutColumns: ['public.people."legacy_code"'] } });
    expect(await env.query('SELECT id, name FROM public.people ORDER BY id')).toEqual([
      { id: 1, name: 'Ada' },
      { id: 2, name: 'Zoë' },
    ]);
  });

  it('common-columns checks the keys an environment-only table references in a table it dropped a column of', async () => {
    const env = await target(`${DRIFTED_SQL} CREATE TABLE public.env_notes (person int REFERENCES public.people (id)); INSERT INTO public.people (id, name) VALUES (2, 'old'); INSERT INTO public.env_notes VALUES (2);`);
    expect(await load(env, 'common-columns')).toMatchObject({ kind: 'loaded', drift: { leftOutColumns: ['public.people."legacy_code"'] } });
    expect(await env.query('SELECT p.name FROM public.env_notes n JOIN public.people p ON p.id = n.person')).toEqual([{ name: 'Zoë' }]);
  });

  it('common-columns fails, as COPY would, on a value too long for a narrower column, and changes nothing', async () => {
    // An explicit cast to varchar(2) would have cut 'Ada' to 'Ad' and loaded it.
    const env = await target(`${DRIFTED_SQL.replace('name text', 'name varchar(2)')} INSERT INTO public.people (id, name) VALUES (9, 'st');`);
    await expect(load(env, 'common-columns')).rejects.toMatchObject({ code: '22001' });
    expect(await env.query('SELECT id, name FROM public.people')).toEqual([{ id: 9, name: 'st' }]);
    // Wide enough, a narrower type takes production's values as they are.
    const fits = await target(DRIFTED_SQL.replace('name text', 'name varchar(3)').replace('note text', 'note char(40)'));
    expect(await load(fits, 'common-columns')).toMatchObject({ kind: 'loaded' });
    expect(await fits.query('SELECT name, rtrim(note) AS note FROM public.people ORDER BY id')).toEqual([
      { name: 'Ada', note: 'it\'s "quoted", \\ too' },
      { name: 'Zoë', note: null },
    ]);
  });

  it('common-columns names the table and column of a value that fails its column, as a COPY error does, keeping the SQLSTATE and never the value', async () => {
    // The environment lacks legacy_code, so the file goes through the staging table; name is narrower there.
    const narrow = await target(`${DRIFTED_SQL.replace('name text', 'name varchar(2)')} INSERT INTO public.people (id, name) VALUES (9, 'st');`);
    const tooLong = await load(narrow, 'common-columns').catch((e: unknown) => e);
    expect(tooLong).toMatchObject({ code: '22001' });
    // What snapshot.load.failed, the alert and the run history carry.
    expect(describeFailure(tooLong, { detail: false })).toEqual({ error: 'value too long for type character varying(2) (table public.people, column name)', code: '22001' });
    expect(await narrow.query('SELECT id, name FROM public.people')).toEqual([{ id: 9, name: 'st' }]);

    // A value the column's type refuses is quoted in PostgreSQL's message: withheld unless ERROR_DETAIL=true.
    const typed = await target(`${DRIFTED_SQL.replace('note text', 'note int')} INSERT INTO public.people (id, name) VALUES (9, 'stale');`);
    const refused = await load(typed, 'common-columns').catch((e: unknown) => e);
    expect(describeFailure(refused, { detail: false })).toEqual({
      error: 'invalid input syntax for type integer: (value withheld; ERROR_DETAIL=true shows it) (table public.people, column note)',
      code: '22P02',
    });
    expect(describeFailure(refused, { detail: true }).error).toBe('invalid input syntax for type integer: "it\'s "quoted", \\ too" (table public.people, column note)');
    expect(await typed.query('SELECT id, name FROM public.people')).toEqual([{ id: 9, name: 'stale' }]);

    // A table's own CHECK is no column's values: the table is named, no column.
    const checked = await target(`${DRIFTED_SQL.replace('note text', 'note text, CHECK (id > 1)')}`);
    const broken = await load(checked, 'common-columns').catch((e: unknown) => e);
    expect(describeFailure(broken, { detail: false })).toEqual({ error: 'new row for relation "people" violates check constraint "people_id_check" (table public.people)', code: '23514' });
  });

  it("common-columns puts the rows in the table alone, as COPY does: the environment's INSERT rules neither divert nor copy them, and are back as they were", async () => {
    // The table lacks legacy_code, so its rows go through the staging table and an INSERT, which rules rewrite.
    const env = await target(`${DRIFTED_SQL}
      CREATE TABLE public.people_audit (id int, at timestamptz DEFAULT now());
      CREATE RULE people_audit AS ON INSERT TO public.people DO ALSO INSERT INTO public.people_audit (id) VALUES (NEW.id);
      CREATE TABLE public.archive (id int PRIMARY KEY, name text);
      CREATE RULE people_archive AS ON INSERT TO public.people WHERE NEW.name = 'Zoë' DO INSTEAD INSERT INTO public.archive VALUES (NEW.id, NEW.name);
      CREATE RULE people_replica AS ON INSERT TO public.people DO ALSO INSERT INTO public.people_audit (id) VALUES (-NEW.id);
      CREATE RULE people_off AS ON INSERT TO public.people DO INSTEAD NOTHING;
      ALTER TABLE public.people ENABLE ALWAYS RULE people_archive;
      ALTER TABLE public.people ENABLE REPLICA RULE people_replica;
      ALTER TABLE public.people DISABLE RULE people_off;`);
    const rules = () => env.query(`SELECT rulename, ev_enabled FROM pg_rewrite WHERE ev_class = 'public.people'::regclass ORDER BY rulename`);
    expect(await rules()).toEqual([
      { rulename: 'people_archive', ev_enabled: 'A' },
      { rulename: 'people_audit', ev_enabled: 'O' },
      { rulename: 'people_off', ev_enabled: 'D' },
      { rulename: 'people_replica', ev_enabled: 'R' },
    ]);
    const before = await rules();

    expect(await load(env, 'common-columns')).toMatchObject({ kind: 'loaded', rows: 2 });

    expect(await env.query('SELECT id, name FROM public.people ORDER BY id')).toEqual([
      { id: 1, name: 'Ada' },
      { id: 2, name: 'Zoë' },
    ]);
    expect(await env.query('SELECT id FROM public.archive')).toEqual([]);
    expect(await env.query('SELECT id FROM public.people_audit')).toEqual([]);
    expect(await rules()).toEqual(before);
    // The rules work again for the environment's own inserts.
    await env.query("INSERT INTO public.people (id, name) VALUES (3, 'new')");
    expect(await env.query('SELECT id FROM public.people_audit')).toEqual([{ id: 3 }]);
  });

  it('common-columns fails, and changes nothing, when the INSERT from the staging table writes fewer rows than the snapshot has', async () => {
    // With LOAD_TRIGGERS=fire, a BEFORE trigger returning NULL skips a row (a COPY's row count catches the same).
    const env = await target(`${DRIFTED_SQL} INSERT INTO public.people (id, name) VALUES (9, 'stale');
      CREATE FUNCTION public.skip_zoe() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.id = 2 THEN RETURN NULL; END IF; RETURN NEW; END $$;
      CREATE TRIGGER skip_zoe BEFORE INSERT ON public.people FOR EACH ROW EXECUTE FUNCTION public.skip_zoe();`);
    const error = await load(env, 'common-columns', 'fire').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TargetSchemaError);
    expect((error as Error).message).toBe('the INSERT from the staging table wrote 1 of its 2 rows into public.people');
    expect(await env.query('SELECT id, name FROM public.people')).toEqual([{ id: 9, name: 'stale' }]);
  });

  it("common-columns sets a sequence credited to a skipped table that a loaded column draws from in the environment, and names those it leaves unset", async () => {
    // Production: orders draws from legacy_orders' serial (3 + 5 ids: at 8), b_items shares a
    // sequence with a_legacy, which the dump credits (the older table: 5 + 5 ids, at 10).
    const written = await snapshotOf(`
      CREATE TABLE public.legacy_orders (id serial PRIMARY KEY, v text);
      CREATE TABLE public.orders (id int PRIMARY KEY DEFAULT nextval('public.legacy_orders_id_seq'), v text);
      CREATE SEQUENCE public.global_id_seq;
      CREATE TABLE public.a_legacy (id bigint PRIMARY KEY DEFAULT nextval('public.global_id_seq'));
      CREATE TABLE public.b_items (id bigint PRIMARY KEY DEFAULT nextval('public.global_id_seq'));
      CREATE TABLE public.old_only (id serial PRIMARY KEY);
      INSERT INTO public.legacy_orders (v) SELECT 'old' FROM generate_series(1, 3);
      INSERT INTO public.orders (v) SELECT 'new' FROM generate_series(1, 5);
      INSERT INTO public.b_items SELECT FROM generate_series(1, 5);
      INSERT INTO public.a_legacy SELECT FROM generate_series(1, 5);
      INSERT INTO public.old_only SELECT FROM generate_series(1, 2);`);
    expect(written.manifest.sequences.map((s) => `${s.sequence} ${s.table}`)).toEqual([
      'public.global_id_seq public.a_legacy',
      'public.legacy_orders_id_seq public.legacy_orders',
      'public.old_only_id_seq public.old_only',
    ]);
    // The environment migrated ahead: the sequence moved to orders, the old tables dropped; it keeps
    // a sequence of old_only's name that no table uses.
    const env = await target(`
      CREATE TABLE public.legacy_orders (id serial PRIMARY KEY, v text);
      CREATE TABLE public.orders (id int PRIMARY KEY DEFAULT nextval('public.legacy_orders_id_seq'), v text);
      ALTER SEQUENCE public.legacy_orders_id_seq OWNED BY public.orders.id;
      DROP TABLE public.legacy_orders;
      CREATE SEQUENCE public.global_id_seq;
      CREATE TABLE public.b_items (id bigint PRIMARY KEY DEFAULT nextval('public.global_id_seq'));
      CREATE SEQUENCE public.old_only_id_seq;`);
    const log: string[] = [];
    expect(await load(env, 'common-columns', undefined, { snapshot: written, log: (line) => log.push(line) })).toMatchObject({
      kind: 'loaded',
      drift: { skippedTables: ['public.a_legacy', 'public.legacy_orders', 'public.old_only'], leftOutColumns: [], defaultedColumns: [], unsetSequences: ['public.old_only_id_seq'] },
    });
    expect(await sequenceStates(env)).toEqual(['global_id_seq 10 true', 'legacy_orders_id_seq 8 true', 'old_only_id_seq 1 false']);
    expect(log.filter((line) => line.includes('left unset'))).toEqual([
      "sequence(s) of production that only a skipped table or a left-out column uses, none of the target's loaded columns, left unset: public.old_only_id_seq",
    ]);
    // The application's next rows take ids after production's, not the loaded ones.
    expect(await env.query("INSERT INTO public.orders (v) VALUES ('app') RETURNING id")).toEqual([{ id: 9 }]);
    expect(await env.query('INSERT INTO public.b_items DEFAULT VALUES RETURNING id::int AS id')).toEqual([{ id: 11 }]);
  });

  it('common-columns fails, as COPY would, on a value too long for a column whose type is a domain over a narrower varchar, naming the column', async () => {
    // An explicit cast to the domain would have cut 'Ada' to 'Ad' (through both domains) and loaded it.
    const env = await target(`CREATE DOMAIN public.short_name AS varchar(2); CREATE DOMAIN public.person_name AS public.short_name CHECK (VALUE <> '');
      ${DRIFTED_SQL.replace('name text', 'name public.person_name')} INSERT INTO public.people (id, name) VALUES (9, 'st');`);
    const error = await load(env, 'common-columns').catch((e: unknown) => e);
    expect(describeFailure(error, { detail: false })).toEqual({ error: 'value too long for type character varying(2) (table public.people, column name)', code: '22001' });
    expect(await env.query('SELECT id, name FROM public.people')).toEqual([{ id: 9, name: 'st' }]);
    // The domain's own CHECK still applies to what the staging table gives it.
    const checked = await target(`CREATE DOMAIN public.no_zoe AS text CHECK (VALUE <> 'Zoë'); ${DRIFTED_SQL.replace('name text', 'name public.no_zoe')}`);
    expect(describeFailure(await load(checked, 'common-columns').catch((e: unknown) => e), { detail: false })).toEqual({
      error: 'value for domain no_zoe violates check constraint "no_zoe_check" (table public.people, column name)',
      code: '23514',
    });
  });

  it('common-columns fails on a value too long for an array of a domain over a narrower varchar, and loads what fits', async () => {
    const prod = await snapshotOf(`CREATE TABLE public.tags (id int PRIMARY KEY, names text[], legacy text); INSERT INTO public.tags VALUES (1, '{ab,abcdefgh}', 'x');`);
    // Never cut short, as an explicit cast of text[] to the array of the domain would ('{ab,abcde}').
    const env = await target(`CREATE DOMAIN public.tag AS varchar(5); CREATE TABLE public.tags (id int PRIMARY KEY, names public.tag[]);`);
    const error = await load(env, 'common-columns', undefined, { snapshot: prod }).catch((e: unknown) => e);
    expect(describeFailure(error, { detail: false })).toEqual({ error: 'value too long for type character varying(5) (table public.tags, column names)', code: '22001' });
    expect(await env.query('SELECT id FROM public.tags')).toEqual([]);
    const fits = await snapshotOf(`CREATE TABLE public.tags (id int PRIMARY KEY, names text[], legacy text); INSERT INTO public.tags VALUES (1, '{ab,abcde}', 'x');`);
    expect(await load(env, 'common-columns', undefined, { snapshot: fits })).toMatchObject({ kind: 'loaded' });
    expect(await env.query('SELECT names::text AS names FROM public.tags')).toEqual([{ names: '{ab,abcde}' }]);
  });

  it('common-columns refuses a target column the snapshot lacks whose domain is NOT NULL without a default, up front', async () => {
    const env = await target(`${DRIFTED_SQL} CREATE DOMAIN public.region AS text NOT NULL; ALTER TABLE public.people ADD COLUMN region public.region;`);
    await expect(load(env, 'common-columns')).rejects.toThrow('public.people."region" is NOT NULL without a default and not in the snapshot');
  });

  it("common-columns gives a NOT NULL target column the snapshot lacks its domain's default, as fail mode's COPY would", async () => {
    const env = await target(`${DRIFTED_SQL} CREATE DOMAIN public.region AS text DEFAULT 'eu'; ALTER TABLE public.people ADD COLUMN region public.region NOT NULL;`);
    expect(await load(env, 'common-columns')).toMatchObject({ kind: 'loaded', drift: { defaultedColumns: ['public.people."added_at"', 'public.people."region"'] } });
    expect(await env.query('SELECT id, region FROM public.people ORDER BY id')).toEqual([
      { id: 1, region: 'eu' },
      { id: 2, region: 'eu' },
    ]);
    // PostgreSQL takes the column's own type's default only: a domain over it that dropped its default has none.
    const dropped = await target(`${DRIFTED_SQL} CREATE DOMAIN public.region AS text DEFAULT 'eu'; CREATE DOMAIN public.zone AS public.region;
      ALTER DOMAIN public.zone DROP DEFAULT; ALTER TABLE public.people ADD COLUMN zone public.zone NOT NULL;`);
    await expect(load(dropped, 'common-columns')).rejects.toThrow('public.people."zone" is NOT NULL without a default and not in the snapshot');
  });

  it('a view where the snapshot has a table: fail names it and what it is; common-columns skips it, writing nothing through it', async () => {
    const sql = `${DRIFTED_SQL} CREATE TABLE public.env_rows (id int); CREATE VIEW public.only_in_prod AS SELECT id FROM public.env_rows;`;
    const failing = await target(sql);
    const error = await load(failing, 'fail').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TargetSchemaError);
    expect((error as Error).message).toBe('public.only_in_prod is a view in the target, not a table; column(s) public.people."legacy_code" missing in the target');

    const env = await target(sql);
    const log: string[] = [];
    expect(await load(env, 'common-columns', undefined, { log: (line) => log.push(line) })).toMatchObject({
      kind: 'loaded',
      drift: { skippedTables: ['public.only_in_prod'], unsetSequences: ['public.only_in_prod_id_seq'] },
    });
    expect(log).toContain('skipped (SCHEMA_DRIFT=common-columns): public.only_in_prod is a view in the target, not a table');
    expect(await env.query('SELECT id FROM public.env_rows')).toEqual([]);
    expect(await env.query('SELECT id FROM public.people ORDER BY id')).toEqual([{ id: 1 }, { id: 2 }]);

    const materialized = await target(`${SOURCE_SQL.split('INSERT')[0].replace('CREATE TABLE public.only_in_prod (id serial PRIMARY KEY);', 'CREATE MATERIALIZED VIEW public.only_in_prod AS SELECT 1 AS id;')}`);
    await expect(load(materialized, 'fail')).rejects.toThrow(/^public\.only_in_prod is a materialized view in the target, not a table$/);
  });

  it('common-columns fails, named, on a NOT NULL target column without a default that the snapshot lacks', async () => {
    const env = await target(`${DRIFTED_SQL} ALTER TABLE public.people ADD COLUMN region text NOT NULL;`);
    await expect(load(env, 'common-columns')).rejects.toThrow('public.people."region" is NOT NULL without a default and not in the snapshot');
  });

  it('common-columns with an identical schema reports no drift', async () => {
    const env = await target(SOURCE_SQL.split('INSERT')[0]);
    const result = await load(env, 'common-columns');
    expect(result.kind).toBe('loaded');
    expect(result).not.toHaveProperty('drift');
    expect(await load(env, 'common-columns')).toMatchObject({ kind: 'already-loaded' });
    expect((await load(env, 'common-columns')) as { entry?: unknown }).not.toHaveProperty('entry.drift');
  });
});
