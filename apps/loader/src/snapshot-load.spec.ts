import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { ADMIN_URL, databaseUrl } from '../../../test/support/databases';
import { ChecksumMismatchError } from '@app/common/streams';
import { parseRules } from '@app/common/rules';
import { writeSnapshot, type WrittenSnapshot } from '../../dumper/src/snapshot-writer';
import { readyPayloadOf as payloadOf } from '../../../test/support/snapshots';
import { directorySource, SnapshotFileError } from './snapshot-files';
import { TargetDatabase } from './database/target-database';
import { loadSnapshot, type LoadRequest, type LoadResult } from './snapshot-load';
import { DanglingReferenceError, TargetSchemaError } from './target-schema';

const DATE = '2024-01-05';
const ENVIRONMENT = 'spec';

async function query<R extends Record<string, unknown>>(url: string, sql: string, params?: unknown[]): Promise<R[]> {
  const client = new Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<R>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

const databases: string[] = [];

/** A database of this spec's own (dropped in afterAll), set up with `sql`; returns its URL. */
async function createDatabase(role: string, sql: string): Promise<string> {
  const name = `spec_loader_${role}_${randomBytes(4).toString('hex')}`;
  await query(ADMIN_URL, `CREATE DATABASE "${name}"`);
  databases.push(name);
  const url = databaseUrl(name);
  await query(url, sql);
  return url;
}

// The schema shared by production and every environment: serial and identity keys, a generated
// column, a self-reference, a cycle of two non-deferrable foreign keys, odd names.
const SCHEMA_SQL = `
  CREATE TABLE public.customers (
    id          serial PRIMARY KEY,
    name        text NOT NULL,
    note        text,
    referrer_id int REFERENCES public.customers (id)
  );
  CREATE TABLE public.teams (
    id        int PRIMARY KEY,
    label     text NOT NULL,
    leader_id int
  );
  CREATE TABLE public.members (
    id      int PRIMARY KEY,
    team_id int NOT NULL REFERENCES public.teams (id),
    nick    text
  );
  ALTER TABLE public.teams ADD CONSTRAINT teams_leader_fk FOREIGN KEY (leader_id) REFERENCES public.members (id);
  CREATE SCHEMA "Sales";
  CREATE TABLE "Sales"."Order Items" (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id  int NOT NULL REFERENCES public.customers (id),
    "qty, total" int NOT NULL,
    "say ""hi""" text,
    doubled      int GENERATED ALWAYS AS ("qty, total" * 2) STORED
  );
`;

// Production: the referrer of customer 1 is customer 3 (loaded later in the same COPY); teams and
// members reference each other.
const SOURCE_DATA_SQL = `
  INSERT INTO public.customers (name, note) VALUES
    ('Ada', E'first line\\nsecond line'), ('Grace, H.', 'she said "hi"'), ('Edsger', NULL), ('Barbara', ''), ('Gone', 'deleted');
  DELETE FROM public.customers WHERE name = 'Gone';
  UPDATE public.customers SET referrer_id = 3 WHERE id = 1;
  UPDATE public.customers SET referrer_id = 1 WHERE id IN (2, 4);
  INSERT INTO public.teams (id, label) VALUES (1, 'core'), (2, 'edge');
  INSERT INTO public.members VALUES (10, 1, 'ann'), (11, 1, 'bob'), (20, 2, 'cy');
  UPDATE public.teams SET leader_id = 10 WHERE id = 1;
  UPDATE public.teams SET leader_id = 20 WHERE id = 2;
  INSERT INTO "Sales"."Order Items" (customer_id, "qty, total", "say ""hi""") VALUES
    (1, 2, 'a, b'), (2, 5, E'multi\\r\\nline'), (3, 1, NULL), (1, 7, 'plain');
`;

// What an environment held before: different rows, and sequences far ahead of production's.
const STALE_DATA_SQL = `
  INSERT INTO public.customers (id, name, note) VALUES (1, 'stale one', 'old'), (99, 'stale only', NULL);
  SELECT setval('public.customers_id_seq', 500);
  INSERT INTO public.teams (id, label) VALUES (7, 'stale team');
  INSERT INTO public.members VALUES (70, 7, 'old member');
  UPDATE public.teams SET leader_id = 70 WHERE id = 7;
  INSERT INTO "Sales"."Order Items" (customer_id, "qty, total", "say ""hi""") SELECT 99, g, 'stale' FROM generate_series(1, 40) g;
`;

const TABLES = ['public.customers', 'public.teams', 'public.members', '"Sales"."Order Items"'];

let sourceUrl: string;
let root: string;
let snapshotDir: string;
let snapshot: WrittenSnapshot;

/** One load through the loader's database layer (its own pool, closed afterwards; `lockTimeoutMs` its sessions' lock_timeout). */
async function loadInto(targetUrl: string, request: LoadRequest, options: { lockTimeoutMs?: number } = {}): Promise<LoadResult> {
  const database = new TargetDatabase(targetUrl, options);
  try {
    return await loadSnapshot(database, request);
  } finally {
    await database.close();
  }
}

function load(targetUrl: string, written: WrittenSnapshot, attempt = 1): Promise<LoadResult> {
  return loadInto(targetUrl, { snapshot: payloadOf(written), dir: written.location, environment: ENVIRONMENT, attempt });
}

async function contentOf(url: string, table: string): Promise<string[]> {
  const rows = await query<{ row: string }>(url, `SELECT t::text AS row FROM ${table} t ORDER BY 1`);
  return rows.map((r) => r.row);
}

/** Every sequence in the database with its state (`name last_value is_called`). */
async function sequencesOf(url: string): Promise<string[]> {
  const names = await query<{ name: string }>(url, `SELECT c.oid::regclass::text AS name FROM pg_class c WHERE c.relkind = 'S' ORDER BY 1`);
  const states: string[] = [];
  for (const { name } of names) {
    const [state] = await query<{ state: string }>(url, `SELECT last_value::text || ' ' || is_called AS state FROM ${name}`);
    states.push(`${name} ${state.state}`);
  }
  return states;
}

/** The tables' rows and every sequence's state: what "untouched" and "equal to production" compare. */
async function contentsOf(url: string, tables: string[] = TABLES): Promise<Record<string, string[]>> {
  const result: Record<string, string[]> = {};
  for (const table of tables) result[table] = await contentOf(url, table);
  result['(sequences)'] = await sequencesOf(url);
  return result;
}

/** Every foreign key in the database with its definition and validation state. */
async function foreignKeys(url: string): Promise<string[]> {
  const rows = await query<{ fk: string }>(
    url,
    `SELECT conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid) || ' validated=' || convalidated AS fk
       FROM pg_constraint WHERE contype = 'f' ORDER BY 1`,
  );
  return rows.map((r) => r.fk);
}

async function ledgerRows(url: string): Promise<Record<string, unknown>[]> {
  const exists = await query<{ t: string | null }>(url, `SELECT to_regclass('db_fanout.loaded_snapshots')::text AS t`);
  if (!exists[0].t) return [];
  return query(
    url,
    `SELECT snapshot_id, snapshot_date::text AS snapshot_date, environment, rows::int AS rows, attempts FROM db_fanout.loaded_snapshots ORDER BY snapshot_id`,
  );
}

/** A target with the shared schema (plus `extraSql`) and stale data. */
function createTarget(extraSql = ''): Promise<string> {
  return createDatabase('target', `${SCHEMA_SQL}\n${STALE_DATA_SQL}\n${extraSql}`);
}

/** A new snapshot of the source (own directory, own id), for tests that alter files. */
function dumpSource(): Promise<WrittenSnapshot> {
  return writeSnapshot({ date: DATE, sourceDatabaseUrl: sourceUrl, snapshotDir, tables: [], excludeTables: [] });
}

/**
 * A source database set up with `sourceSql`, dumped as dumpSource dumps (every table), then a target
 * set up with `targetSql`: databases `<label>_source` and `<label>_target`, in that order.
 */
async function dumpedSourceAndTarget(label: string, sourceSql: string, targetSql: string): Promise<{ source: string; written: WrittenSnapshot; target: string }> {
  const source = await createDatabase(`${label}_source`, sourceSql);
  const written = await writeSnapshot({ date: DATE, sourceDatabaseUrl: source, snapshotDir, tables: [], excludeTables: [] });
  const target = await createDatabase(`${label}_target`, targetSql);
  return { source, written, target };
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'spec-snapshot-load-'));
  snapshotDir = join(root, 'snapshots');
  sourceUrl = await createDatabase('source', `${SCHEMA_SQL}\n${SOURCE_DATA_SQL}`);
  mkdirSync(snapshotDir);
  snapshot = await dumpSource();
  expect(snapshot.manifest.tables.map((t) => t.name).sort()).toEqual([...TABLES].sort());
});

afterAll(async () => {
  for (const name of databases) {
    await query(ADMIN_URL, 'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [name]);
    await query(ADMIN_URL, `DROP DATABASE IF EXISTS "${name}"`);
  }
  if (root) rmSync(root, { recursive: true, force: true });
});

/** Every sequence of the target with its state, e.g. `public.customers_id_seq 5 true`. */
async function sequenceStates(url: string): Promise<string[]> {
  const sequences = await query<{ name: string }>(url, "SELECT format('%I.%I', schemaname, sequencename) AS name FROM pg_sequences ORDER BY 1");
  const states: string[] = [];
  for (const { name } of sequences) {
    const [state] = await query<{ last_value: string; is_called: boolean }>(url, `SELECT last_value::text, is_called FROM ${name}`);
    states.push(`${name} ${state.last_value} ${state.is_called}`);
  }
  return states;
}

describe('loadSnapshot', () => {
  it('replaces the stale target data with exactly the source content', async () => {
    const target = await createTarget();
    const source = await contentsOf(sourceUrl);
    expect(await contentsOf(target)).not.toEqual(source);

    const result = await load(target, snapshot);

    expect(result.kind).toBe('loaded');
    const expectedRows = snapshot.manifest.tables.reduce((sum, t) => sum + t.rows, 0);
    expect(expectedRows).toBe(4 + 2 + 3 + 4);
    expect(result).toMatchObject({ kind: 'loaded', rows: expectedRows });
    expect(await contentsOf(target)).toEqual(source);
  });

  it('records the load in db_fanout.loaded_snapshots: one row', async () => {
    const target = await createTarget();
    await load(target, snapshot, 2);
    expect(await ledgerRows(target)).toEqual([
      { snapshot_id: snapshot.manifest.snapshotId, snapshot_date: DATE, environment: ENVIRONMENT, rows: 13, attempts: 2 },
    ]);
  });

  it('returns already-loaded for a snapshot in the ledger and changes nothing', async () => {
    const target = await createTarget();
    const first = await load(target, snapshot);
    expect(first.kind).toBe('loaded');
    // A change made in the environment after the load: a second load of the same snapshot must keep it.
    await query(target, `INSERT INTO public.customers (name) VALUES ('added after the load')`);
    const before = await contentsOf(target);
    const ledgerBefore = await ledgerRows(target);

    const second = await load(target, snapshot);

    expect(second).toEqual({
      kind: 'already-loaded',
      entry: expect.objectContaining({ snapshotId: snapshot.manifest.snapshotId, rows: 13, attempts: 1 }),
    });
    expect(await contentsOf(target)).toEqual(before);
    expect(await ledgerRows(target)).toEqual(ledgerBefore);
    expect(ledgerBefore).toHaveLength(1);
  });

  it('loads a cycle of non-deferrable foreign keys and a self-reference, and the constraints exist afterwards', async () => {
    const target = await createTarget();
    const keysBefore = await foreignKeys(target);
    expect(keysBefore).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^teams teams_leader_fk FOREIGN KEY \(leader_id\) REFERENCES members\(id\) validated=true$/),
        expect.stringMatching(/^members members_team_id_fkey FOREIGN KEY \(team_id\) REFERENCES teams\(id\) validated=true$/),
        expect.stringMatching(/^customers customers_referrer_id_fkey FOREIGN KEY \(referrer_id\) REFERENCES customers\(id\) validated=true$/),
      ]),
    );
    const deferrable = await query<{ n: number }>(target, `SELECT count(*)::int AS n FROM pg_constraint WHERE contype = 'f' AND condeferrable`);
    expect(deferrable[0].n).toBe(0);

    await expect(load(target, snapshot)).resolves.toMatchObject({ kind: 'loaded' });

    expect(await contentsOf(target)).toEqual(await contentsOf(sourceUrl));
    expect(await foreignKeys(target)).toEqual(keysBefore);
    // The constraints are enforced again: a dangling reference is refused.
    await expect(query(target, `UPDATE public.teams SET leader_id = 999 WHERE id = 1`)).rejects.toThrow(/teams_leader_fk/);
    await expect(query(target, `UPDATE public.customers SET referrer_id = 999 WHERE id = 1`)).rejects.toThrow(/customers_referrer_id_fkey/);
  });

  it('keeps a target-only table referencing a snapshot table, and its foreign key, when its rows still match', async () => {
    const target = await createTarget(`
      CREATE TABLE public.reviews (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES public.customers (id), body text);
      INSERT INTO public.reviews VALUES (1, 1, 'kept');
    `);
    const keysBefore = await foreignKeys(target);

    await expect(load(target, snapshot)).resolves.toMatchObject({ kind: 'loaded' });

    expect(await contentOf(target, 'public.reviews')).toEqual(['(1,1,kept)']);
    expect(await foreignKeys(target)).toEqual(keysBefore);
    expect(keysBefore.some((fk) => fk.startsWith('reviews reviews_customer_id_fkey'))).toBe(true);
  });

  it('fails on a foreign key violation in the target and leaves the target untouched', async () => {
    // reviews (target only) references customer 99, which production does not have.
    const target = await createTarget(`
      CREATE TABLE public.reviews (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES public.customers (id), body text);
      INSERT INTO public.reviews VALUES (1, 99, 'about a stale customer');
    `);
    const before = await contentsOf(target, [...TABLES, 'public.reviews']);
    const keysBefore = await foreignKeys(target);
    const sequencesBefore = await sequenceStates(target);

    const error = await load(target, snapshot).catch((e: unknown) => e);

    // Found before anything was truncated, naming the referencing table, the constraint and (in
    // DETAIL, shown in events only with ERROR_DETAIL=true) one example key.
    expect(error).toBeInstanceOf(DanglingReferenceError);
    expect((error as Error).message).toMatch(/table public\.reviews \(not in the snapshot\).*"reviews_customer_id_fkey"/);
    expect((error as DanglingReferenceError).detail).toBe("Key (customer_id)=(99) is not present in the snapshot's public.customers.");
    expect(await contentsOf(target, [...TABLES, 'public.reviews'])).toEqual(before);
    expect(await foreignKeys(target)).toEqual(keysBefore);
    expect(await sequenceStates(target)).toEqual(sequencesBefore);
    expect(await ledgerRows(target)).toEqual([]);
  });

  it('loads where a foreign key from outside is NOT VALID: it never promised its old rows a match, and stays NOT VALID', async () => {
    // As pg_restore leaves it: the key re-added NOT VALID, the orphan kept.
    const target = await createTarget(`
      CREATE TABLE public.legacy (id int PRIMARY KEY, customer_id int);
      INSERT INTO public.legacy VALUES (1, 99);
      ALTER TABLE public.legacy ADD CONSTRAINT legacy_customer FOREIGN KEY (customer_id) REFERENCES public.customers (id) NOT VALID;
    `);
    const keysBefore = await foreignKeys(target);
    expect(keysBefore).toContain('legacy legacy_customer FOREIGN KEY (customer_id) REFERENCES customers(id) NOT VALID validated=false');

    await expect(load(target, snapshot)).resolves.toMatchObject({ kind: 'loaded' });
    expect(await contentOf(target, 'public.legacy')).toEqual(['(1,99)']);
    expect(await foreignKeys(target)).toEqual(keysBefore);
    expect(await contentsOf(target)).toEqual(await contentsOf(sourceUrl));
  });

  it('fails with ChecksumMismatchError naming the file when a file was altered after publication, and leaves the target untouched', async () => {
    const altered = await dumpSource();
    const second = altered.manifest.tables[1];
    const path = join(altered.location, second.file);
    const original = readFileSync(path);
    // Change one letter of the data (letters only occur in text values here): same size, valid CSV, new digest.
    const dataStart = original.indexOf(0x0a) + 1;
    let at = -1;
    for (let i = dataStart; i < original.length; i++) {
      if (original[i] >= 0x61 && original[i] <= 0x7a) {
        at = i;
        break;
      }
    }
    expect(at).toBeGreaterThan(0);
    const changed = Buffer.from(original);
    changed[at] = changed[at] === 0x7a ? 0x79 : changed[at] + 1;
    writeFileSync(path, changed);
    expect(statSync(path).size).toBe(second.bytes);

    const target = await createTarget();
    const before = await contentsOf(target);
    const keysBefore = await foreignKeys(target);

    const error = await load(target, altered).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(ChecksumMismatchError);
    expect((error as Error).message).toContain(second.file);
    expect(await contentsOf(target)).toEqual(before);
    expect(await foreignKeys(target)).toEqual(keysBefore);
    expect(await ledgerRows(target)).toEqual([]);

    // The target connection is usable and the unaltered snapshot still loads.
    await expect(load(target, snapshot)).resolves.toMatchObject({ kind: 'loaded' });
    expect(await contentsOf(target)).toEqual(await contentsOf(sourceUrl));
  });

  it('fails with ChecksumMismatchError, not a dangling reference, when a file a table outside the snapshot references was altered', async () => {
    const altered = await dumpSource();
    const customers = altered.manifest.tables.find((t) => t.name === 'public.customers')!;
    const path = join(altered.location, customers.file);
    const lines = readFileSync(path, 'utf8').split('\n');
    // Customer 1 becomes customer 7 (same size): the review below would find its customer gone.
    const row = lines.findIndex((line) => line.startsWith('1,'));
    lines[row] = `7${lines[row].slice(1)}`;
    writeFileSync(path, lines.join('\n'));
    expect(statSync(path).size).toBe(customers.bytes);
    const target = await createTarget(`
      CREATE TABLE public.reviews (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES public.customers (id), body text);
      INSERT INTO public.reviews VALUES (1, 1, 'kept');`);
    const before = await contentsOf(target);

    const error = await load(target, altered).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(ChecksumMismatchError);
    expect((error as Error).message).toContain(customers.file);
    expect(await contentsOf(target)).toEqual(before);
  });

  it('fails with TargetSchemaError naming the table and column when a target column is missing, and leaves the target untouched', async () => {
    const target = await createTarget(`ALTER TABLE public.customers DROP COLUMN note;`);
    const before = await contentsOf(target);

    const error = await load(target, snapshot).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(TargetSchemaError);
    expect((error as Error).message).toContain('public.customers');
    expect((error as Error).message).toMatch(/\bnote\b/);
    expect(await contentsOf(target)).toEqual(before);
    expect(await ledgerRows(target)).toEqual([]);
  });

  it('fails with TargetSchemaError naming a table missing in the target, and leaves the target untouched', async () => {
    const target = await createTarget(`DROP TABLE public.members CASCADE;`);
    const remaining = TABLES.filter((t) => t !== 'public.members');
    const before = await contentsOf(target, remaining);

    const error = await load(target, snapshot).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(TargetSchemaError);
    expect((error as Error).message).toContain('public.members');
    expect(await contentsOf(target, remaining)).toEqual(before);
    expect(await ledgerRows(target)).toEqual([]);
  });

  it('fails with SnapshotFileError when the snapshot directory is gone, and leaves the target untouched', async () => {
    const target = await createTarget();
    const before = await contentsOf(target);
    const missing = join(snapshotDir, 'prod_snapshot_20240105-00000000');

    const error = await loadInto(target, {
      snapshot: { ...payloadOf(snapshot), location: missing },
      dir: missing,
      environment: ENVIRONMENT,
      attempt: 1,
    }).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(SnapshotFileError);
    expect((error as Error).message).toMatch(/does not exist/);
    expect(await contentsOf(target)).toEqual(before);
  });

  it('fails with SnapshotFileError naming the file when a table file is a symbolic link out of the snapshot directory, and leaves the target untouched', async () => {
    // A consistent snapshot whose customers file was moved out of SNAPSHOT_DIR and linked back:
    // same bytes, same digest, so only the link itself can refuse it.
    const linked = await dumpSource();
    const customers = linked.manifest.tables.find((t) => t.name === 'public.customers')!;
    const outside = mkdtempSync(join(root, 'outside-'));
    renameSync(join(linked.location, customers.file), join(outside, 'data.csv'));
    symlinkSync(join(outside, 'data.csv'), join(linked.location, customers.file));
    const target = await createTarget();
    const before = await contentsOf(target);

    const error = await load(target, linked).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(SnapshotFileError);
    expect((error as Error).message).toContain(customers.file);
    expect((error as Error).message).toContain('outside the snapshot directory');
    expect((error as Error).message).not.toContain('Ada');
    expect(await contentsOf(target)).toEqual(before);
    expect(await ledgerRows(target)).toEqual([]);
  });

  it('sets the target sequences so the next insert continues after the source', async () => {
    const target = await createTarget();
    const [{ max: sourceCustomersMax }] = await query<{ max: number }>(sourceUrl, 'SELECT max(id)::int AS max FROM public.customers');
    const [{ max: sourceItemsMax }] = await query<{ max: number }>(sourceUrl, 'SELECT max(id)::int AS max FROM "Sales"."Order Items"');

    await load(target, snapshot);

    const customersSeq = snapshot.manifest.sequences.find((s) => s.table === 'public.customers')!;
    const itemsSeq = snapshot.manifest.sequences.find((s) => s.table === '"Sales"."Order Items"')!;
    // Production used 5 customer ids (the 5th row was deleted) and 4 order item ids.
    expect(customersSeq).toMatchObject({ lastValue: '5', isCalled: true });
    expect(itemsSeq).toMatchObject({ lastValue: '4', isCalled: true });

    const [customer] = await query<{ id: number }>(target, `INSERT INTO public.customers (name) VALUES ('new') RETURNING id`);
    expect(customer.id).toBeGreaterThan(sourceCustomersMax);
    expect(customer.id).toBe(6);
    const [item] = await query<{ id: string }>(
      target,
      `INSERT INTO "Sales"."Order Items" (customer_id, "qty, total") VALUES (1, 1) RETURNING id`,
    );
    expect(Number(item.id)).toBeGreaterThan(sourceItemsMax);
    expect(Number(item.id)).toBe(5);
  });
});

describe('loadSnapshot racing itself (two replicas holding one message)', () => {
  it('loads once into a fresh target and reports the other call as already loaded', async () => {
    const target = await createTarget();
    const results = await Promise.all([load(target, snapshot), load(target, snapshot)]);
    expect(results.map((r) => r.kind).sort()).toEqual(['already-loaded', 'loaded']);
    expect(await ledgerRows(target)).toHaveLength(1);
    expect(await contentsOf(target)).toEqual(await contentsOf(sourceUrl));
  });

  it('loads once too where the database defaults to REPEATABLE READ (the re-check after the wait sees the first load)', async () => {
    const target = await createTarget(
      "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_isolation = %L', current_database(), 'repeatable read'); END $$;",
    );
    const results = await Promise.all([load(target, snapshot), load(target, snapshot)]);
    expect(results.map((r) => r.kind).sort()).toEqual(['already-loaded', 'loaded']);
    expect(await ledgerRows(target)).toHaveLength(1);
    expect(await contentsOf(target)).toEqual(await contentsOf(sourceUrl));
  });
});

describe('loadSnapshot into its own source', () => {
  it('refuses, naming the database, and changes nothing', async () => {
    const before = await contentsOf(sourceUrl);
    await expect(load(sourceUrl, snapshot)).rejects.toThrow(/refusing to load snapshot .* into its own source database/);
    expect(await contentsOf(sourceUrl)).toEqual(before);
    // Not even the ledger's schema: production is never written to.
    expect(await query(sourceUrl, "SELECT nspname FROM pg_namespace WHERE nspname = 'db_fanout'")).toEqual([]);
  });
});

describe('loadSnapshot with indexes deferred to the end of the load', () => {
  const indexesAndKeys = (url: string) =>
    query<{ def: string }>(
      url,
      `SELECT indexdef AS def FROM pg_indexes WHERE schemaname IN ('public', 'Sales')
       UNION ALL SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint WHERE connamespace::regnamespace::text IN ('public', '"Sales"')
       UNION ALL SELECT 'clustered ' || indexrelid::regclass::text FROM pg_index WHERE indisclustered
       ORDER BY 1`,
    );

  it('leaves every index, key and constraint as it was, including a clustered index and a partial unique index', async () => {
    const target = await createTarget(`
      CREATE UNIQUE INDEX customers_name_note ON public.customers (name) WHERE note IS NOT NULL;
      CREATE INDEX "Order Items by qty" ON "Sales"."Order Items" ("qty, total" DESC);
      ALTER TABLE public.members CLUSTER ON members_pkey;`);
    const before = await indexesAndKeys(target);
    expect(before.map((r) => r.def).join('\n')).toContain('clustered members_pkey');

    await load(target, snapshot);

    expect(await indexesAndKeys(target)).toEqual(before);
    expect(await contentsOf(target)).toEqual(await contentsOf(sourceUrl));
  });

  it('fails when the data breaks a unique index of the target, and leaves the target untouched', async () => {
    // Production has two order items for customer 1: a target that says "one per customer" refuses them.
    const target = await createTarget('CREATE UNIQUE INDEX one_item_per_customer ON "Sales"."Order Items" (customer_id) WHERE customer_id <> 99;');
    const before = await contentsOf(target);
    const indexesBefore = await indexesAndKeys(target);
    await expect(load(target, snapshot)).rejects.toMatchObject({ code: '23505' });
    expect(await contentsOf(target)).toEqual(before);
    expect(await indexesAndKeys(target)).toEqual(indexesBefore);
    expect(await ledgerRows(target)).toEqual([]);
  });
});

describe('CHECK constraints production added NOT VALID (rows older than them break them)', () => {
  // The zero-downtime way to add a check: NOT VALID, validated later or never. pg_dump writes such a
  // constraint after the data, so pg_restore loads the old rows; so must a load.
  const SQL = `
    CREATE DOMAIN public.qty AS int;
    CREATE TABLE public.stock (id int PRIMARY KEY CHECK (id > 0), qty int, amount public.qty, history public.qty[]);
    CREATE TABLE public.readings (id int, at int) PARTITION BY RANGE (id);
    CREATE TABLE public.readings_low PARTITION OF public.readings FOR VALUES FROM (0) TO (100);
    CREATE TABLE public.readings_high PARTITION OF public.readings FOR VALUES FROM (100) TO (200);
    INSERT INTO public.stock VALUES (1, -5, 3, '{3,9}'), (2, 7, 8, '{8}');
    INSERT INTO public.readings VALUES (1, -1), (150, 0);
    ALTER TABLE public.stock ADD CONSTRAINT qty_not_negative CHECK (qty >= 0) NOT VALID;
    COMMENT ON CONSTRAINT qty_not_negative ON public.stock IS 'rows before 2024 predate it';
    ALTER DOMAIN public.qty ADD CONSTRAINT qty_over_five CHECK (VALUE > 5) NOT VALID;
    COMMENT ON CONSTRAINT qty_over_five ON DOMAIN public.qty IS 'domain''s own';
    ALTER TABLE public.readings ADD CONSTRAINT at_positive CHECK (at > 0) NOT VALID;
    ALTER TABLE public.readings_high ADD CONSTRAINT high_at_positive CHECK (at > 0) NOT VALID;`;
  const constraints = (url: string) =>
    query(
      url,
      `SELECT CASE WHEN conrelid <> 0 THEN conrelid::regclass::text ELSE 'domain ' || contypid::regtype::text END AS owner, conname, pg_get_constraintdef(oid) AS def, convalidated,
              obj_description(oid, 'pg_constraint') AS comment
         FROM pg_constraint WHERE contype = 'c' AND connamespace = 'public'::regnamespace ORDER BY 1, 2`,
    );

  it('loads the rows that break them, and leaves every constraint as it was: NOT VALID, with its comment', async () => {
    const { source, written, target } = await dumpedSourceAndTarget('notvalid', SQL, `${SQL} INSERT INTO public.stock VALUES (9, 1, 9, '{9}');`);
    const before = await constraints(target);
    // NOT VALID: stock's, the domain's, readings' (and the copies its partitions inherit), readings_high's own.
    expect(before.filter((c) => c.convalidated === false)).toHaveLength(6);
    expect(before.filter((c) => c.convalidated === true).map((c) => c.conname)).toEqual(['stock_id_check']);

    expect(await load(target, written)).toMatchObject({ kind: 'loaded' });

    const content = 'SELECT s.*, r.* FROM public.stock s FULL JOIN public.readings r ON r.id = s.id ORDER BY s.id, r.id';
    expect(await query(target, content)).toEqual(await query(source, content));
    expect(await constraints(target)).toEqual(before);
    // Still enforced on new rows, as before.
    await expect(query(target, 'INSERT INTO public.stock VALUES (3, -1, 6)')).rejects.toMatchObject({ code: '23514' });
    await expect(query(target, 'INSERT INTO public.stock VALUES (3, 1, 2)')).rejects.toMatchObject({ code: '23514' });
  });
});

describe("a domain's NOT VALID check as the only one (no table's check dropped after it)", () => {
  it('loads: dropping the domain check no longer breaks the savepoint that drops each index', async () => {
    // PostgreSQL refuses a SAVEPOINT right after ALTER DOMAIN ... DROP CONSTRAINT in a transaction
    // ("cannot start a subtransaction when there are unprocessed inval messages", XX000).
    const SQL = `
      CREATE DOMAIN public.posint AS int;
      CREATE TABLE public.scores (id int PRIMARY KEY, score public.posint);
      CREATE INDEX scores_score ON public.scores (score);`;
    const NOT_VALID = 'ALTER DOMAIN public.posint ADD CONSTRAINT positive CHECK (VALUE > 0) NOT VALID;';
    const { source, written, target } = await dumpedSourceAndTarget('domaincheck', `${SQL} INSERT INTO public.scores VALUES (1, -5), (2, 3); ${NOT_VALID}`, `${SQL} ${NOT_VALID}`);

    expect(await load(target, written)).toMatchObject({ kind: 'loaded' });
    const content = 'SELECT * FROM public.scores ORDER BY id';
    expect(await query(target, content)).toEqual(await query(source, content));
    expect(await query(target, "SELECT convalidated FROM pg_constraint WHERE conname = 'positive'")).toEqual([{ convalidated: false }]);
    expect(await query(target, "SELECT indexrelid::regclass::text AS name FROM pg_index WHERE indrelid = 'public.scores'::regclass ORDER BY 1")).toEqual([
      { name: 'scores_pkey' },
      { name: 'scores_score' },
    ]);
  });

  it('loads where a table outside the snapshot references it: the keys are checked without the domain check the old rows break', async () => {
    const SQL = `
      CREATE DOMAIN public.posint AS int;
      CREATE TABLE public.scores (id int PRIMARY KEY, score public.posint);`;
    const NOT_VALID = 'ALTER DOMAIN public.posint ADD CONSTRAINT positive CHECK (VALUE > 0) NOT VALID;';
    const { source, written, target } = await dumpedSourceAndTarget(
      'domainref',
      `${SQL} INSERT INTO public.scores VALUES (1, -5), (2, 3); ${NOT_VALID}`,
      `${SQL} ${NOT_VALID} INSERT INTO public.scores VALUES (1, 4); CREATE TABLE public.notes (id int PRIMARY KEY, score_id int REFERENCES public.scores); INSERT INTO public.notes VALUES (1, 1);`,
    );

    expect(await load(target, written)).toMatchObject({ kind: 'loaded' });
    expect(await query(target, 'SELECT * FROM public.scores ORDER BY id')).toEqual(await query(source, 'SELECT * FROM public.scores ORDER BY id'));
    expect(await query(target, 'SELECT * FROM public.notes')).toEqual([{ id: 1, score_id: 1 }]);
  });
});

describe('a column tied to two sequences in production', () => {
  // A serial migrated to identity: the old sequence stays owned by the column, the identity's is new
  // (`t_id_seq1`) and is the one the column draws from.
  const MIGRATED = `
    CREATE TABLE public.t (id serial PRIMARY KEY, v text);
    ALTER TABLE public.t ALTER id DROP DEFAULT;
    ALTER TABLE public.t ALTER id ADD GENERATED BY DEFAULT AS IDENTITY (START 1000);`;

  it('sets each of them by its name where the target has both, so the next insert continues after production', async () => {
    const { source, written, target } = await dumpedSourceAndTarget('twoseq', `${MIGRATED} INSERT INTO public.t (v) SELECT 'x' FROM generate_series(1, 20);`, MIGRATED);

    expect(await load(target, written)).toMatchObject({ kind: 'loaded' });

    expect(await sequencesOf(target)).toEqual(await sequencesOf(source));
    expect(await query(target, "INSERT INTO public.t (v) VALUES ('new') RETURNING id")).toEqual([{ id: 1020 }]);
  });

  it("sets a partition's own sequence and its parent's, each by its name", async () => {
    const SQL = `
      CREATE TABLE public.events (id bigserial, at date NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
      CREATE TABLE public.events_2025 PARTITION OF public.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
      CREATE SEQUENCE public.legacy_events_id_seq;
      CREATE TABLE public.legacy_events (id bigint NOT NULL DEFAULT nextval('public.legacy_events_id_seq'), at date NOT NULL);
      ALTER SEQUENCE public.legacy_events_id_seq OWNED BY public.legacy_events.id;
      ALTER TABLE public.events ATTACH PARTITION public.legacy_events FOR VALUES FROM ('2000-01-01') TO ('2025-01-01');`;
    const { source, written, target } = await dumpedSourceAndTarget(
      'partseq',
      `${SQL}
      INSERT INTO public.legacy_events (at) SELECT '2020-01-01' FROM generate_series(1, 3);
      INSERT INTO public.events (at) SELECT '2025-06-01' FROM generate_series(1, 50);`,
      SQL,
    );

    expect(await load(target, written)).toMatchObject({ kind: 'loaded' });

    expect(await sequencesOf(target)).toEqual(await sequencesOf(source));
    expect(await query(target, "INSERT INTO public.events (at) VALUES ('2025-07-01') RETURNING id::int")).toEqual([{ id: 51 }]);
  });

  it('sets the one sequence the target has for the two to the one further along, so the next insert continues after every loaded row', async () => {
    // The target is built with identity from the start: its sequence has the old serial's name,
    // t_id_seq, which production's manifest lists at 1 (never called) besides the identity's 1019.
    const { written, target } = await dumpedSourceAndTarget(
      'oneseq',
      `${MIGRATED} INSERT INTO public.t (v) SELECT 'x' FROM generate_series(1, 20);`,
      'CREATE TABLE public.t (id int GENERATED BY DEFAULT AS IDENTITY (START 1000) PRIMARY KEY, v text);',
    );

    expect(await load(target, written)).toMatchObject({ kind: 'loaded' });

    expect(await sequencesOf(target)).toEqual(['t_id_seq 1019 true']);
    expect(await query(target, "INSERT INTO public.t (v) VALUES ('new') RETURNING id")).toEqual([{ id: 1020 }]);
  });
});

describe("a domain's NOT VALID check on a value inside a column's type", () => {
  it("loads the rows that break it: a composite's attribute, a range's subtype and a multirange's, as pg_restore does", async () => {
    const SQL = `
      CREATE DOMAIN public.pos AS int;
      CREATE TYPE public.pair AS (a public.pos, b int);
      CREATE TYPE public.nested AS (inner_pair public.pair);
      CREATE TYPE public.posrange AS RANGE (subtype = public.pos);
      CREATE TABLE public.t (id int PRIMARY KEY, p public.pair, n public.nested[], r public.posrange, m public.posmultirange);`;
    const NOT_VALID = 'ALTER DOMAIN public.pos ADD CONSTRAINT pos_check CHECK (VALUE > 0) NOT VALID;';
    const { source, written, target } = await dumpedSourceAndTarget(
      'deepdomain',
      `${SQL}
      INSERT INTO public.t VALUES (1, ROW(-1, 2), NULL, NULL, NULL), (2, NULL, ARRAY[ROW(ROW(-2, 0))]::public.nested[], NULL, NULL),
        (3, NULL, NULL, public.posrange(-3, 5), NULL), (4, NULL, NULL, NULL, public.posmultirange(public.posrange(-9, -2))); ${NOT_VALID}`,
      `${SQL} ${NOT_VALID}`,
    );

    expect(await load(target, written)).toMatchObject({ kind: 'loaded' });

    expect(await contentOf(target, 'public.t')).toEqual(await contentOf(source, 'public.t'));
    expect(await query(target, "SELECT convalidated FROM pg_constraint WHERE conname = 'pos_check'")).toEqual([{ convalidated: false }]);
    await expect(query(target, 'INSERT INTO public.t (id, p) VALUES (9, ROW(-1, 0))')).rejects.toMatchObject({ code: '23514' });
  });
});

describe('a table outside the snapshot referencing a generated column (never in the file)', () => {
  // The key it references is computed from a domain-typed column, as COPY computes it in the table.
  const SQL = `
    CREATE DOMAIN public.posint AS int;
    CREATE TABLE public.a (x public.posint PRIMARY KEY, code text GENERATED ALWAYS AS ('A' || x) STORED UNIQUE);`;
  const OUTSIDE = 'CREATE TABLE public.b (code text REFERENCES public.a (code));';

  function snapshotAndTarget(role: string, referenced: string): Promise<{ source: string; written: WrittenSnapshot; target: string }> {
    return dumpedSourceAndTarget(role, `${SQL} INSERT INTO public.a VALUES (1), (2);`, `${SQL} INSERT INTO public.a VALUES (1), (7); ${OUTSIDE} INSERT INTO public.b VALUES ('${referenced}');`);
  }

  it('loads when every referenced key is in the snapshot, keeping the rows and the key', async () => {
    const { source, written, target } = await snapshotAndTarget('genref', 'A1');
    const keysBefore = await foreignKeys(target);

    expect(await load(target, written)).toMatchObject({ kind: 'loaded' });

    expect(await contentOf(target, 'public.a')).toEqual(await contentOf(source, 'public.a'));
    expect(await contentOf(target, 'public.b')).toEqual(['(A1)']);
    expect(await foreignKeys(target)).toEqual(keysBefore);
  });

  it('fails naming the foreign key when a referenced key is not in the snapshot, and changes nothing', async () => {
    const { written, target } = await snapshotAndTarget('gendangling', 'A7');
    const before = await contentsOf(target, ['public.a', 'public.b']);

    const error = await load(target, written).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(DanglingReferenceError);
    expect((error as Error).message).toMatch(/table public\.b \(not in the snapshot\).*"b_code_fkey"/);
    expect((error as DanglingReferenceError).detail).toBe("Key (code)=(A7) is not present in the snapshot's public.a.");
    expect(await contentsOf(target, ['public.a', 'public.b'])).toEqual(before);
  });
});

describe('a masked reference to a generated column (the environment computes it from the masked row)', () => {
  // The rules check takes no strategy for email_norm: whether lower(email), computed from the masked
  // email, still equals orders' masked user_email depends on the strategies, and the load tells.
  const SQL = `
    CREATE TABLE public.users (id int PRIMARY KEY, email text NOT NULL, email_norm text GENERATED ALWAYS AS (lower(email)) STORED UNIQUE);
    CREATE TABLE public.orders (id int PRIMARY KEY, user_email text REFERENCES public.users (email_norm));`;
  const DATA = `
    INSERT INTO public.users (id, email) VALUES (1, 'Alice.Secret@corp.example');
    INSERT INTO public.orders VALUES (10, 'alice.secret@corp.example');`;

  async function maskedSnapshotAndTarget(role: string, strategy: string): Promise<{ written: WrittenSnapshot; target: string }> {
    const source = await createDatabase(`${role}_source`, SQL + DATA);
    const rules = parseRules(`strict: true\ntables:\n  public.users: { id: keep, email: ${strategy} }\n  public.orders: { id: keep, user_email: ${strategy} }\n`, 'rules.yaml');
    const written = await writeSnapshot({ date: DATE, sourceDatabaseUrl: source, snapshotDir, tables: [], excludeTables: [], rules, maskingKey: 'generated key spec 0123' });
    const target = await createDatabase(`${role}_target`, SQL);
    return { written, target };
  }

  it('loads email at both ends with the foreign key validated, and no production address in the snapshot', async () => {
    const { written, target } = await maskedSnapshotAndTarget('genmask', 'email');
    for (const table of written.manifest.tables) expect(readFileSync(join(written.location, table.file), 'utf8').toLowerCase()).not.toContain('secret');

    expect(await load(target, written)).toMatchObject({ kind: 'loaded' });

    // email masks the lower-cased address, so lower(masked email) is orders' masked user_email.
    expect(await query(target, 'SELECT o.id FROM public.orders o JOIN public.users u ON u.email_norm = o.user_email')).toEqual([{ id: 10 }]);
    expect(await query(target, "SELECT convalidated FROM pg_constraint WHERE conname = 'orders_user_email_fkey'")).toEqual([{ convalidated: true }]);
  });

  it('fails at the foreign key, naming it, where the generated value no longer equals the masked reference (hash of two cases)', async () => {
    const { written, target } = await maskedSnapshotAndTarget('genhash', 'hash');

    const error = await load(target, written).catch((e: unknown) => e);

    expect(error).toMatchObject({ code: '23503', message: expect.stringContaining('orders_user_email_fkey') });
    expect(await query(target, 'SELECT count(*)::int AS n FROM public.orders')).toEqual([{ n: 0 }]);
  });
});

describe('a NOT VALID check a child has of its own and from a parent the snapshot leaves out', () => {
  it('stays in place (it cannot be dropped while the parent keeps its copy), and rows that keep it load', async () => {
    const SQL = `
      CREATE TABLE public.p (id int PRIMARY KEY, v int);
      CREATE TABLE public.c () INHERITS (public.p);
      ALTER TABLE public.c ADD CONSTRAINT pos CHECK (v > 0) NOT VALID;
      ALTER TABLE public.p ADD CONSTRAINT pos CHECK (v > 0) NOT VALID;`;
    const source = await createDatabase('parentout_source', `${SQL} INSERT INTO public.c VALUES (2, 5);`);
    const written = await writeSnapshot({ date: DATE, sourceDatabaseUrl: source, snapshotDir, tables: [{ schema: 'public', name: 'c' }], excludeTables: [] });
    const target = await createDatabase('parentout_target', SQL);

    expect(await load(target, written)).toMatchObject({ kind: 'loaded' });
    expect(await query(target, 'SELECT * FROM public.c')).toEqual([{ id: 2, v: 5 }]);
    expect(await query(target, "SELECT conrelid::regclass::text AS owner, conislocal, coninhcount, convalidated FROM pg_constraint WHERE conname = 'pos' ORDER BY 1")).toEqual([
      { owner: 'c', conislocal: true, coninhcount: 1, convalidated: false },
      { owner: 'p', conislocal: true, coninhcount: 0, convalidated: false },
    ]);
  });
});

/**
 * Loads `written` into `target` while an app's transaction (`appSql` after BEGIN) holds a table:
 * once the load waits for the app's lock, `meanwhile` runs (given the app's session), then the app
 * ends its transaction with `end`. Resolves with the load's result.
 */
async function loadWhileAppHolds(target: string, written: WrittenSnapshot, appSql: string, end: 'COMMIT' | 'ROLLBACK', meanwhile: (app: Client) => Promise<unknown>): Promise<LoadResult> {
  const app = new Client({ connectionString: target, application_name: 'app' });
  await app.connect();
  try {
    await app.query('BEGIN');
    await app.query(appSql);
    const loading = load(target, written);
    const waiting = async () =>
      (await query<{ n: string }>(target, "SELECT count(*)::text AS n FROM pg_stat_activity WHERE application_name = 'db-fanout-loader' AND wait_event_type = 'Lock'"))[0].n === '1';
    for (let tries = 0; !(await waiting()); tries++) {
      if (tries > 100) throw new Error('the load never waited for the app');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await meanwhile(app);
    await app.query(end);
    return await loading;
  } finally {
    await app.end();
  }
}

describe('a migration committed in the environment while a load waits for a table', () => {
  it('is kept: the load locks its tables before it reads what it will replay (indexes, triggers)', async () => {
    const SQL = `
      CREATE TABLE public.a (id int PRIMARY KEY, v text);
      CREATE TABLE public.b (id int PRIMARY KEY, v text);
      CREATE INDEX b_v ON public.b (v);
      CREATE FUNCTION public.noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
      CREATE TRIGGER a_trg BEFORE INSERT ON public.a FOR EACH ROW EXECUTE FUNCTION public.noop();
      CREATE TRIGGER b_trg BEFORE INSERT ON public.b FOR EACH ROW EXECUTE FUNCTION public.noop();`;
    const { written, target } = await dumpedSourceAndTarget('migration', `${SQL} INSERT INTO public.a VALUES (1, 'x'); INSERT INTO public.b VALUES (1, 'Y');`, SQL);

    // The app, mid-transaction on a, holds the load up; meanwhile a migration on b: its index now on lower(v), its trigger off.
    const loaded = await loadWhileAppHolds(target, written, "INSERT INTO public.a VALUES (2, 'pending')", 'ROLLBACK', () =>
      query(target, 'DROP INDEX public.b_v; CREATE INDEX b_v ON public.b (lower(v)); ALTER TABLE public.b DISABLE TRIGGER b_trg;'),
    );
    expect(loaded).toMatchObject({ kind: 'loaded' });

    expect(await query(target, "SELECT pg_get_indexdef('public.b_v'::regclass) AS def")).toEqual([{ def: 'CREATE INDEX b_v ON public.b USING btree (lower(v))' }]);
    expect(await query(target, "SELECT tgname, tgenabled FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1")).toEqual([
      { tgname: 'a_trg', tgenabled: 'O' },
      { tgname: 'b_trg', tgenabled: 'D' },
    ]);
    expect(await query(target, 'SELECT * FROM public.b')).toEqual([{ id: 1, v: 'Y' }]);
  });
});

describe('a NOT VALID check an inheritance child has both of its own and from its parent', () => {
  it('loads the rows that break it, and leaves it as it was on both tables', async () => {
    const SQL = `
      CREATE TABLE public.p (id int PRIMARY KEY, v int);
      CREATE TABLE public.c (extra text) INHERITS (public.p);
      CREATE TABLE public.g () INHERITS (public.c);`;
    // Each level's own, merged with what it inherits from above.
    const CHECKS = `
      ALTER TABLE public.g ADD CONSTRAINT pos CHECK (v > 0) NOT VALID;
      ALTER TABLE public.c ADD CONSTRAINT pos CHECK (v > 0) NOT VALID;
      ALTER TABLE public.p ADD CONSTRAINT pos CHECK (v > 0) NOT VALID;`;
    const { written, target } = await dumpedSourceAndTarget(
      'mergedcheck',
      `${SQL} INSERT INTO public.p VALUES (1, -1); INSERT INTO public.c VALUES (2, -2, 'old'); INSERT INTO public.g VALUES (3, -3, 'older'); ${CHECKS}`,
      `${SQL} ${CHECKS}`,
    );
    const checks = (url: string) =>
      query(url, "SELECT conrelid::regclass::text AS owner, conname, convalidated, conislocal, coninhcount FROM pg_constraint WHERE contype = 'c' AND conrelid <> 0 ORDER BY 1, 2");
    const before = await checks(target);
    expect(before).toEqual([
      { owner: 'c', conname: 'pos', convalidated: false, conislocal: true, coninhcount: 1 },
      { owner: 'g', conname: 'pos', convalidated: false, conislocal: true, coninhcount: 1 },
      { owner: 'p', conname: 'pos', convalidated: false, conislocal: true, coninhcount: 0 },
    ]);

    expect(await load(target, written)).toMatchObject({ kind: 'loaded' });
    expect(await query(target, 'SELECT id, v FROM public.p ORDER BY 1')).toEqual([
      { id: 1, v: -1 },
      { id: 2, v: -2 },
      { id: 3, v: -3 },
    ]);
    expect(await checks(target)).toEqual(before);
  });
});

/**
 * Production with tables a and b (one row each, v 'prod'), dumped, and an environment with the same
 * two tables holding `targetRows` (SQL run after they are made).
 */
async function twoTableSnapshot(label: string, targetRows: string): Promise<{ written: WrittenSnapshot; target: string }> {
  const SQL = 'CREATE TABLE public.a (id int PRIMARY KEY, v text); CREATE TABLE public.b (id int PRIMARY KEY, v text);';
  const { written, target } = await dumpedSourceAndTarget(label, `${SQL} INSERT INTO public.a VALUES (1, 'prod'); INSERT INTO public.b VALUES (1, 'prod');`, `${SQL} ${targetRows}`);
  return { written, target };
}

describe('a table swapped in the environment while a load waits for another', () => {
  it('is loaded as the new table, with its own triggers silent, the old one left as it is', async () => {
    const { written, target } = await twoTableSnapshot('swap', "INSERT INTO public.b VALUES (7, 'old');");
    // The swap, while the app holds the load up: b renamed aside, a new b with a trigger of its own.
    const swap = `ALTER TABLE public.b RENAME TO b_old; CREATE TABLE public.b (id int PRIMARY KEY, v text); CREATE TABLE public.b_audit (id int);
      CREATE FUNCTION public.audit_b() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO public.b_audit VALUES (NEW.id); RETURN NEW; END $$;
      CREATE TRIGGER b_audit AFTER INSERT ON public.b FOR EACH ROW EXECUTE FUNCTION public.audit_b();`;
    expect(await loadWhileAppHolds(target, written, "INSERT INTO public.a VALUES (2, 'pending')", 'ROLLBACK', () => query(target, swap))).toMatchObject({ kind: 'loaded' });
    expect(await query(target, 'SELECT * FROM public.b')).toEqual([{ id: 1, v: 'prod' }]);
    expect(await query(target, 'SELECT * FROM public.b_audit')).toEqual([]);
    expect(await query(target, 'SELECT * FROM public.b_old')).toEqual([{ id: 7, v: 'old' }]);
  });
});

describe('an app transaction that reads a table, then writes it, while a load starts', () => {
  it('finishes, and so does the load: no deadlock (the load takes its exclusive locks at once, never upgrades)', async () => {
    const { written, target } = await twoTableSnapshot('readwrite', "INSERT INTO public.a VALUES (1, 'env');");
    const loaded = await loadWhileAppHolds(target, written, 'SELECT * FROM public.a', 'COMMIT', (app) => app.query("UPDATE public.a SET v = 'app' WHERE id = 1"));
    expect(loaded).toMatchObject({ kind: 'loaded' });
    expect(await query(target, 'SELECT * FROM public.a')).toEqual([{ id: 1, v: 'prod' }]);
  });
});

/**
 * A target whose public.customers an app session (`app`, application_name `app`) holds in an open
 * transaction that read it, as a report or an idle-in-transaction session would: the load's ACCESS
 * EXCLUSIVE lock waits for it. `work` gets the app's pid, the target, and `release` (the app rolls
 * back), which also runs after it.
 */
async function withCustomersHeld(work: (held: { target: string; appPid: number; release: () => Promise<void> }) => Promise<void>): Promise<void> {
  const target = await createTarget();
  const app = new Client({ connectionString: target, application_name: 'app' });
  await app.connect();
  let released: Promise<unknown> | undefined;
  const release = async () => {
    released ??= app.query('ROLLBACK').catch(() => undefined);
    await released;
  };
  try {
    // The query's text must never reach an error or a log line: it may quote production's values.
    await app.query("BEGIN; SELECT count(*) FROM public.customers WHERE note IS DISTINCT FROM 'query-text-marker'");
    const [{ pid }] = (await app.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows;
    await work({ target, appPid: pid, release });
  } finally {
    await release();
    await app.end();
  }
}

/** Resolves once a loader session of `target` waits for a lock (its LOCK TABLE on the snapshot's tables). */
async function loaderWaitsForLock(target: string): Promise<void> {
  const waiting = async () =>
    (await query<{ n: string }>(target, "SELECT count(*)::text AS n FROM pg_stat_activity WHERE application_name = 'db-fanout-loader' AND wait_event_type = 'Lock'"))[0].n === '1';
  for (let tries = 0; !(await waiting()); tries++) {
    if (tries > 400) throw new Error('the load never waited for the app');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** What a promise settled with, or `still waiting` after `ms`: a wait that is not cut short fails the test fast. */
function settledWithin<T>(promise: Promise<T>, ms: number): Promise<{ value: T } | { error: unknown } | 'still waiting'> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise.then(
      (value) => ({ value }),
      (error: unknown) => ({ error }),
    ),
    new Promise<'still waiting'>((resolve) => (timer = setTimeout(() => resolve('still waiting'), ms))),
  ]).finally(() => clearTimeout(timer));
}

/**
 * Stops the app while a load of `target` waits for a lock another session holds (`release` ends that
 * session's transaction): the load must give up within `withinMs` of the stop with 55P03 and a message
 * matching `message`, holding no lock, and leave `tables` and the ledger as they were.
 */
async function expectStopToEndTheWait({ target, release }: { target: string; release: () => Promise<void> }, tables: string[], withinMs: number, message: RegExp): Promise<void> {
  const before = await contentsOf(target, tables);
  const stopping = new AbortController();
  const loading = loadInto(target, { snapshot: payloadOf(snapshot), dir: snapshot.location, environment: ENVIRONMENT, attempt: 1, signal: stopping.signal });
  try {
    await loaderWaitsForLock(target);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const stoppedAt = Date.now();
    stopping.abort();
    const outcome = await settledWithin(loading, withinMs * 2);
    expect(Date.now() - stoppedAt).toBeLessThan(withinMs);
    expect(outcome).toMatchObject({ error: { code: '55P03' } });
    expect((outcome as { error: Error }).error.message).toMatch(message);
    // Nothing of the load is left: no loader session waits or holds a lock on the target.
    expect(await query(target, "SELECT pid FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'db-fanout-loader'")).toEqual([]);
  } finally {
    // A load that was not cut short is let through before the target is looked at.
    await release();
    await loading.catch(() => undefined);
  }
  expect(await contentsOf(target, tables)).toEqual(before);
  expect(await ledgerRows(target)).toEqual([]);
}

describe("a load waiting for its tables' locks while another session holds one", () => {
  it('gives up within about a second of the app stopping (the load rolls back, the target unchanged)', async () => {
    // Under the session's 60 s lock_timeout a single LOCK ended only after a minute.
    await withCustomersHeld((held) => expectStopToEndTheWait(held, TABLES, 10_000, /stopping.*public\.customers/));
  });

  it("fails after the session's lock_timeout with 55P03 (retried), naming the table and the session holding it, never its query", async () => {
    await withCustomersHeld(async ({ target, appPid }) => {
      const before = await contentsOf(target);
      const started = Date.now();
      const error = await loadInto(target, { snapshot: payloadOf(snapshot), dir: snapshot.location, environment: ENVIRONMENT, attempt: 1 }, { lockTimeoutMs: 1_500 }).then(
        () => undefined,
        (e: unknown) => e as Error & { code?: string },
      );
      expect(Date.now() - started).toBeLessThan(15_000);
      expect(error).toMatchObject({ code: '55P03' });
      expect(error?.message).toMatch(new RegExp(`public\\.customers: pid ${appPid} \\(app, user \\w+, idle in transaction since [^)]+\\) holds public\\.customers$`));
      expect(error?.message).not.toContain('query-text-marker');
      expect(await contentsOf(target)).toEqual(before);
    });
  });

  it('says once, after a while, which tables it waits for and who holds them, then loads when they are free', async () => {
    await withCustomersHeld(async ({ target, appPid, release }) => {
      const lines: string[] = [];
      const loading = loadInto(target, { snapshot: payloadOf(snapshot), dir: snapshot.location, environment: ENVIRONMENT, attempt: 1, log: (line) => lines.push(line) });
      try {
        for (let tries = 0; !lines.some((line) => line.startsWith('waiting ')); tries++) {
          if (tries > 300) throw new Error(`nothing said about the wait: ${JSON.stringify(lines)}`);
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
        const said = lines.filter((line) => line.startsWith('waiting '));
        expect(said).toEqual([expect.stringMatching(new RegExp(`^waiting \\d+\\.\\d s for ACCESS EXCLUSIVE locks on public\\.customers: pid ${appPid} \\(app, .*holds public\\.customers; giving up after lock_timeout \\(60\\.0 s\\) on the load$`))]);
        await release();
        expect(await loading).toMatchObject({ kind: 'loaded' });
        expect(lines.filter((line) => line.startsWith('waiting '))).toHaveLength(1);
      } finally {
        await release();
        await loading.catch(() => undefined);
      }
    });
  });
});

describe('a partitioned table whose partition in the environment is a foreign table (postgres_fdw)', () => {
  it("loads the local partitions and leaves the other server's table alone (TRUNCATE would empty it there)", async () => {
    const remote = await createDatabase('fdw_remote', `CREATE TABLE public.events_remote (id int, email text); INSERT INTO public.events_remote VALUES (1, 'kept@remote.example');`);
    const remoteName = new URL(remote).pathname.slice(1);
    const SQL = 'CREATE TABLE public.events (id int, email text) PARTITION BY RANGE (id);';
    const { source, written, target } = await dumpedSourceAndTarget(
      'fdw',
      `${SQL} CREATE TABLE public.events_old PARTITION OF public.events FOR VALUES FROM (0) TO (100);
       CREATE TABLE public.events_new PARTITION OF public.events FOR VALUES FROM (100) TO (200);
       INSERT INTO public.events VALUES (150, 'from@production.example');`,
      `CREATE EXTENSION postgres_fdw;
       CREATE SERVER remote FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '5432', dbname '${remoteName}');
       CREATE USER MAPPING FOR CURRENT_USER SERVER remote OPTIONS (user '${decodeURIComponent(new URL(remote).username) || 'root'}');
       ${SQL} CREATE FOREIGN TABLE public.events_old PARTITION OF public.events FOR VALUES FROM (0) TO (100) SERVER remote OPTIONS (table_name 'events_remote');
       CREATE TABLE public.events_new PARTITION OF public.events FOR VALUES FROM (100) TO (200);
       INSERT INTO public.events_new VALUES (101, 'stale@environment.example');`,
    );

    expect(await load(target, written)).toMatchObject({ kind: 'loaded' });
    expect(await query(remote, 'SELECT * FROM public.events_remote')).toEqual([{ id: 1, email: 'kept@remote.example' }]);
    expect(await query(target, 'SELECT * FROM ONLY public.events_new')).toEqual([{ id: 150, email: 'from@production.example' }]);

    // A production row that falls in the foreign partition's range here: the load refuses to send it
    // to the other server (where every load would add it again) and changes nothing, there either.
    await query(source, "INSERT INTO public.events VALUES (50, 'old@production.example')");
    const again = await writeSnapshot({ date: DATE, sourceDatabaseUrl: source, snapshotDir, tables: [], excludeTables: [] });
    await expect(load(target, again)).rejects.toThrow('1 of the 2 rows of public.events belong to foreign partitions of it in this environment');
    expect(await query(remote, 'SELECT * FROM public.events_remote')).toEqual([{ id: 1, email: 'kept@remote.example' }]);
    expect(await query(target, 'SELECT * FROM ONLY public.events_new')).toEqual([{ id: 150, email: 'from@production.example' }]);
  });
});

describe('tables without columns (all dropped, or only generated ones)', () => {
  it('are dumped and loaded with their rows: one row per row, the target\'s defaults where the environment has columns', async () => {
    const SQL = `
      CREATE TABLE public.markers ();
      INSERT INTO public.markers DEFAULT VALUES; INSERT INTO public.markers DEFAULT VALUES;
      CREATE TABLE public.legacy (x int, total int GENERATED ALWAYS AS (1) STORED);
      INSERT INTO public.legacy (x) SELECT generate_series(1, 3);
      ALTER TABLE public.legacy DROP COLUMN x;`;
    const source = await createDatabase('nocols_source', SQL);
    const written = await writeSnapshot({ date: DATE, sourceDatabaseUrl: source, snapshotDir, tables: [], excludeTables: [] });
    expect(written.manifest.tables.map((t) => [t.name, t.columns, t.rows])).toEqual([
      ['public.legacy', [], 3],
      ['public.markers', [], 2],
    ]);
    // The environment: markers as production has it, legacy still with a column production dropped.
    const target = await createDatabase(
      'nocols_target',
      `CREATE TABLE public.markers (); INSERT INTO public.markers DEFAULT VALUES;
       CREATE TABLE public.legacy (note text DEFAULT 'from the environment', total int GENERATED ALWAYS AS (1) STORED);`,
    );

    expect(await load(target, written)).toMatchObject({ kind: 'loaded' });
    expect(await query(target, 'SELECT count(*)::int AS n FROM public.markers')).toEqual([{ n: 2 }]);
    expect(await query(target, 'SELECT note, total FROM public.legacy')).toEqual(Array.from({ length: 3 }, () => ({ note: 'from the environment', total: 1 })));
  });

  it("are loaded as COPY would load them, whatever INSERT rules the environment has on them (such a table's rows go through an INSERT)", async () => {
    const { written, target } = await dumpedSourceAndTarget(
      'nocols_rules',
      'CREATE TABLE public.markers (); INSERT INTO public.markers DEFAULT VALUES; INSERT INTO public.markers DEFAULT VALUES;',
      `CREATE TABLE public.markers ();
       CREATE TABLE public.marker_log (at timestamptz DEFAULT now());
       CREATE RULE markers_logged AS ON INSERT TO public.markers DO INSTEAD INSERT INTO public.marker_log DEFAULT VALUES;`,
    );

    expect(await load(target, written)).toMatchObject({ kind: 'loaded', rows: 2 });

    expect(await query(target, 'SELECT count(*)::int AS n FROM public.markers')).toEqual([{ n: 2 }]);
    expect(await query(target, 'SELECT count(*)::int AS n FROM public.marker_log')).toEqual([{ n: 0 }]);
    expect(await query(target, "SELECT ev_enabled FROM pg_rewrite WHERE rulename = 'markers_logged'")).toEqual([{ ev_enabled: 'O' }]);
  });
});

describe("a sequence a view's default calls, or a foreign table's column owns", () => {
  /** Production: 5 rows inserted through the view (vseq at 5), the foreign table's sequence at 7. */
  const dumpedWithViewAndForeignSequences = (name: string) => {
    const SCHEMA = `
      CREATE SEQUENCE public.vseq;
      CREATE TABLE public.base (id int PRIMARY KEY, n text);
      CREATE VIEW public.v AS SELECT * FROM public.base;
      ALTER VIEW public.v ALTER COLUMN id SET DEFAULT nextval('public.vseq');
      CREATE EXTENSION file_fdw;
      CREATE SERVER files FOREIGN DATA WRAPPER file_fdw;
      CREATE FOREIGN TABLE public.ft (id serial, n text) SERVER files OPTIONS (filename '/dev/null');`;
    return dumpedSourceAndTarget(
      name,
      `${SCHEMA}
       INSERT INTO public.v (n) SELECT 'x' FROM generate_series(1, 5);
       SELECT nextval('public.ft_id_seq') FROM generate_series(1, 7);`,
      SCHEMA,
    );
  };

  it("is set to production's value, as pg_dump sets it: the next insert through the view continues after production's ids", async () => {
    const { written, target } = await dumpedWithViewAndForeignSequences('viewseq');

    expect(await load(target, written)).toMatchObject({ kind: 'loaded', rows: 5 });

    expect(await sequencesOf(target)).toEqual(['ft_id_seq 7 true', 'vseq 5 true']);
    expect(await query(target, "INSERT INTO public.v (n) VALUES ('new') RETURNING id")).toEqual([{ id: 6 }]);
  });

  it("leaves one the loader's role does not own unset, saying so, and loads the rest (a foreign table's belongs to whoever may use its server)", async () => {
    const { written, target } = await dumpedWithViewAndForeignSequences('seqowner');
    // The loader's role owns the environment's database, tables, view and their sequence; the
    // foreign table (and its sequence) stays the superuser's, who may use the server.
    const role = `spec_loader_owner_${randomBytes(4).toString('hex')}`;
    await query(
      target,
      `CREATE ROLE "${role}" LOGIN;
       DO $$ BEGIN EXECUTE format('ALTER DATABASE %I OWNER TO "${role}"', current_database()); END $$;
       ALTER TABLE public.base OWNER TO "${role}"; ALTER VIEW public.v OWNER TO "${role}"; ALTER SEQUENCE public.vseq OWNER TO "${role}";`,
    );
    const asLoader = new URL(target);
    asLoader.username = role;
    try {
      const lines: string[] = [];
      const result = await loadInto(asLoader.toString(), { snapshot: payloadOf(written), dir: written.location, environment: ENVIRONMENT, attempt: 1, log: (line) => lines.push(line) });
      expect(result).toMatchObject({ kind: 'loaded', rows: 5 });
      expect(await sequencesOf(target)).toEqual(['ft_id_seq 1 false', 'vseq 5 true']);
      expect(lines).toContainEqual("sequence(s) of production that no loaded column uses are not the loader role's own, left unset: public.ft_id_seq");
    } finally {
      await query(target, `REASSIGN OWNED BY "${role}" TO CURRENT_USER; DROP OWNED BY "${role}"`);
      await query(ADMIN_URL, `DROP ROLE "${role}"`);
    }
  });
});

describe('a snapshot of many tables', () => {
  it('reads their headers with at most 8 downloads open at once, not one per table', async () => {
    const SQL = Array.from({ length: 30 }, (_, i) => `CREATE TABLE public.t${i} (id int); INSERT INTO public.t${i} VALUES (${i});`).join('\n');
    const { written, target } = await dumpedSourceAndTarget('many', SQL, SQL.replaceAll(/INSERT INTO [^;]+;/g, ''));
    const files = directorySource(written.location);
    let open = 0;
    let mostOpen = 0;
    const counted = {
      ...files,
      open: async (name: string) => {
        const stream = await files.open(name);
        mostOpen = Math.max(mostOpen, ++open);
        stream.once('close', () => open--);
        return stream;
      },
    };

    expect(await loadInto(target, { snapshot: payloadOf(written), source: counted, environment: ENVIRONMENT, attempt: 1 })).toMatchObject({ kind: 'loaded' });
    expect(mostOpen).toBeLessThanOrEqual(8);
    expect(mostOpen).toBeGreaterThan(1);
    expect(await query(target, 'SELECT count(*)::int AS n FROM public.t29')).toEqual([{ n: 1 }]);
  });
});

describe('an invalid index in the target (a failed CREATE INDEX CONCURRENTLY)', () => {
  it('stays as it was, invalid, instead of being built again (and enforced, or failing the load)', async () => {
    const target = await createTarget("INSERT INTO public.customers (name) VALUES ('one'), ('two');");
    // Outside a transaction, as CONCURRENTLY must be: two rows share the key, so the build fails.
    await expect(query(target, 'CREATE UNIQUE INDEX CONCURRENTLY one_customer_only ON public.customers ((1))')).rejects.toMatchObject({ code: '23505' });
    const state = () => query<{ valid: boolean }>(target, "SELECT indisvalid AS valid FROM pg_index WHERE indexrelid = 'public.one_customer_only'::regclass");
    expect(await state()).toEqual([{ valid: false }]);

    expect(await load(target, snapshot)).toMatchObject({ kind: 'loaded' });
    expect(await state()).toEqual([{ valid: false }]);
    expect(await contentsOf(target)).toEqual(await contentsOf(sourceUrl));
  });
});

describe('loadSnapshot and what else lives in the target', () => {
  it('never loads a snapshot over one dumped later (a retry that lost a race): superseded, nothing changes', async () => {
    const target = await createTarget();
    const older = snapshot;
    await query(sourceUrl, "UPDATE public.customers SET note = 'newer' WHERE id = 1");
    const newer = await dumpSource();
    await query(sourceUrl, "UPDATE public.customers SET note = 'first line\nsecond line' WHERE id = 1");
    expect(await load(target, newer)).toMatchObject({ kind: 'loaded' });
    const afterNewer = await contentsOf(target);

    expect(await load(target, older)).toEqual({ kind: 'superseded', by: newer.manifest.snapshotId });
    expect(await contentsOf(target)).toEqual(afterNewer);
    expect((await ledgerRows(target)).map((r) => r.snapshot_id)).toEqual([newer.manifest.snapshotId]);
  });

  it('reloads an older snapshot by hand once: the same request delivered again after a newer load changes nothing', async () => {
    const target = await createTarget();
    const older = snapshot;
    await query(sourceUrl, "UPDATE public.customers SET note = 'newer' WHERE id = 1");
    const newer = await dumpSource();
    await query(sourceUrl, "UPDATE public.customers SET note = 'first line\nsecond line' WHERE id = 1");
    const reload = (sequence: number) =>
      loadInto(target, { snapshot: payloadOf(older), dir: older.location, environment: ENVIRONMENT, attempt: 1, force: true, reloadSequence: sequence });
    expect(await load(target, older)).toMatchObject({ kind: 'loaded' });
    const olderContents = await contentsOf(target);
    expect(await reload(41)).toMatchObject({ kind: 'loaded' });
    expect(await reload(41)).toMatchObject({ kind: 'already-loaded' }); // its ack was lost: the same request again
    expect(await contentsOf(target)).toEqual(olderContents);

    // The day's newer snapshot loads, then the reload request is delivered once more: the newer data stays.
    expect(await load(target, newer)).toMatchObject({ kind: 'loaded' });
    const afterNewer = await contentsOf(target);
    expect(afterNewer).not.toEqual(olderContents);
    expect(await reload(41)).toMatchObject({ kind: 'already-loaded' });
    expect(await contentsOf(target)).toEqual(afterNewer);
    // A new request (another sequence) reloads, as asked.
    expect(await reload(42)).toMatchObject({ kind: 'loaded' });
    expect(await contentsOf(target)).toEqual(olderContents);
  });

  it('keeps an index that a view depends on in place instead of failing the load', async () => {
    const target = await createTarget('CREATE VIEW public.customer_names AS SELECT id, name FROM public.customers GROUP BY id;');
    expect(await load(target, snapshot)).toMatchObject({ kind: 'loaded' });
    expect(await contentsOf(target)).toEqual(await contentsOf(sourceUrl));
    const [{ n }] = await query<{ n: string }>(target, 'SELECT count(*)::text AS n FROM public.customer_names');
    expect(n).toBe('4');
  });

  it('leaves the rows of an inheritance child that is not in the snapshot', async () => {
    const target = await createTarget("CREATE TABLE public.vip_customers (tier text) INHERITS (public.customers); INSERT INTO public.vip_customers (id, name, tier) VALUES (1000, 'vip', 'gold');");
    expect(await load(target, snapshot)).toMatchObject({ kind: 'loaded' });
    expect(await query(target, 'SELECT id, name, tier FROM ONLY public.vip_customers')).toEqual([{ id: 1000, name: 'vip', tier: 'gold' }]);
  });

  it('keeps comments on indexes and key constraints it rebuilt', async () => {
    const target = await createTarget(`COMMENT ON CONSTRAINT members_pkey ON public.members IS 'the member''s id';
      CREATE INDEX members_nick ON public.members (nick); COMMENT ON INDEX public.members_nick IS 'lookup by nick';`);
    await load(target, snapshot);
    expect(
      await query(target, "SELECT obj_description('public.members_nick'::regclass, 'pg_class') AS index_comment, obj_description((SELECT oid FROM pg_constraint WHERE conname = 'members_pkey'), 'pg_constraint') AS key_comment"),
    ).toEqual([{ index_comment: 'lookup by nick', key_comment: "the member's id" }]);
  });
});

describe('loadSnapshot leaves the environment the way pg_restore would', () => {
  // The environment's own triggers: an audit log, a BEFORE trigger that would rewrite loaded rows,
  // and triggers in every state pg_trigger.tgenabled knows.
  const TRIGGERS_SQL = `
    CREATE TABLE public.audit (at timestamptz DEFAULT now(), what text);
    CREATE FUNCTION public.audit_row() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN INSERT INTO public.audit (what) VALUES (TG_TABLE_NAME || ' ' || TG_OP); RETURN NEW; END $$;
    CREATE FUNCTION public.shout() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.name := upper(NEW.name); RETURN NEW; END $$;
    CREATE TRIGGER customers_audit AFTER INSERT ON public.customers FOR EACH ROW EXECUTE FUNCTION public.audit_row();
    CREATE TRIGGER customers_shout BEFORE INSERT ON public.customers FOR EACH ROW EXECUTE FUNCTION public.shout();
    CREATE TRIGGER members_replica AFTER INSERT ON public.members FOR EACH ROW EXECUTE FUNCTION public.audit_row();
    ALTER TABLE public.members ENABLE REPLICA TRIGGER members_replica;
    CREATE TRIGGER teams_always AFTER INSERT ON public.teams FOR EACH ROW EXECUTE FUNCTION public.audit_row();
    ALTER TABLE public.teams ENABLE ALWAYS TRIGGER teams_always;
    CREATE TRIGGER teams_off AFTER INSERT ON public.teams FOR EACH ROW EXECUTE FUNCTION public.audit_row();
    ALTER TABLE public.teams DISABLE TRIGGER teams_off;
    CREATE TRIGGER customers_truncate AFTER TRUNCATE ON public.customers FOR EACH STATEMENT EXECUTE FUNCTION public.audit_row();
  `;
  const triggerStates = (url: string) =>
    query<{ t: string }>(url, `SELECT tgrelid::regclass::text || ' ' || tgname || ' ' || tgenabled::text AS t FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1`);

  it("keeps the environment's own triggers from firing for loaded rows, and restores each to its exact state", async () => {
    const target = await createTarget(TRIGGERS_SQL);
    const statesBefore = await triggerStates(target);
    expect(statesBefore.map((r) => r.t)).toEqual([
      'customers customers_audit O',
      'customers customers_shout O',
      'customers customers_truncate O',
      'members members_replica R',
      'teams teams_always A',
      'teams teams_off D',
    ]);

    expect(await load(target, snapshot)).toMatchObject({ kind: 'loaded' });

    expect(await contentsOf(target)).toEqual(await contentsOf(sourceUrl));
    expect(await query(target, 'SELECT * FROM public.audit')).toEqual([]);
    expect(await triggerStates(target)).toEqual(statesBefore);
    // Still enabled for the environment's own writes.
    await query(target, `INSERT INTO public.customers (name) VALUES ('after')`);
    expect(await query(target, `SELECT what FROM public.audit`)).toEqual([{ what: 'customers INSERT' }]);
    expect(await query(target, `SELECT name FROM public.customers WHERE name ILIKE 'after'`)).toEqual([{ name: 'AFTER' }]);
  });

  it('lets the triggers fire with LOAD_TRIGGERS=fire', async () => {
    const target = await createTarget(TRIGGERS_SQL);
    await loadInto(target, { snapshot: payloadOf(snapshot), dir: snapshot.location, environment: ENVIRONMENT, attempt: 1, triggers: 'fire' });
    const audit = await query<{ what: string; n: number }>(target, 'SELECT what, count(*)::int AS n FROM public.audit GROUP BY 1 ORDER BY 1');
    // ENABLE REPLICA triggers fire only in replica sessions; the others fire as they would for any insert.
    expect(audit).toEqual([
      { what: 'customers INSERT', n: 4 },
      { what: 'customers TRUNCATE', n: 1 },
      { what: 'teams INSERT', n: 2 },
    ]);
  });

  it("fails, naming the environment's trigger and changing nothing, when a BEFORE trigger skips loaded rows under LOAD_TRIGGERS=fire", async () => {
    const target = await createTarget(`${TRIGGERS_SQL}
      CREATE FUNCTION public.skip_some() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.id % 2 = 0 THEN RETURN NULL; END IF; RETURN NEW; END $$;
      CREATE TRIGGER skip_some BEFORE INSERT ON public.customers FOR EACH ROW EXECUTE FUNCTION public.skip_some();`);
    const before = await contentsOf(target);
    const error = await loadInto(target, { snapshot: payloadOf(snapshot), dir: snapshot.location, environment: ENVIRONMENT, attempt: 1, triggers: 'fire' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TargetSchemaError);
    // customers_shout (upper-cases names) fires too: the message names every trigger that may have.
    expect((error as Error).message).toBe(
      "public.customers: COPY wrote 2 of the 4 rows of 0002_public.customers.csv, which matched its digest: a BEFORE INSERT trigger of the environment returned NULL for the others (LOAD_TRIGGERS=fire; firing: public.customers.customers_shout, public.customers.skip_some)",
    );
    expect(await contentsOf(target)).toEqual(before);
  });

  it('builds the indexes with LOAD_MAINTENANCE_WORK_MEM as the floor of maintenance_work_mem (1GB unless set)', async () => {
    // What the load's transaction runs with, seen from inside it: an ON TRUNCATE trigger (the
    // truncate follows the load's settings) notes the setting.
    const NOTE_SQL = `
      CREATE TABLE public.seen (setting text);
      CREATE FUNCTION public.note_setting() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO public.seen VALUES (current_setting('maintenance_work_mem')); RETURN NULL; END $$;
      CREATE TRIGGER customers_note AFTER TRUNCATE ON public.customers FOR EACH STATEMENT EXECUTE FUNCTION public.note_setting();
    `;
    const seenBy = async (maintenanceWorkMemKb?: number) => {
      const target = await createTarget(NOTE_SQL);
      await loadInto(target, { snapshot: payloadOf(snapshot), dir: snapshot.location, environment: ENVIRONMENT, attempt: 1, triggers: 'fire', maintenanceWorkMemKb });
      return (await query<{ setting: string }>(target, 'SELECT setting FROM public.seen')).map((r) => r.setting);
    };
    expect(await seenBy()).toEqual(['1GB']);
    expect(await seenBy(100 * 1024)).toEqual(['100MB']);
  });

  it("reads the catalog with JIT off, and loads the data with the environment's own JIT setting", async () => {
    // PostgreSQL JIT-compiled the load's recursive catalog queries for seconds on every load. Seen
    // from inside the load's transaction: the TRUNCATE ends the preparation, the COPY is the data.
    const target = await createTarget(`
      CREATE TABLE public.seen (at text, jit text);
      CREATE FUNCTION public.note_jit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO public.seen VALUES (TG_OP, current_setting('jit')); RETURN NULL; END $$;
      CREATE TRIGGER customers_truncated AFTER TRUNCATE ON public.customers FOR EACH STATEMENT EXECUTE FUNCTION public.note_jit();
      CREATE TRIGGER customers_copied AFTER INSERT ON public.customers FOR EACH STATEMENT EXECUTE FUNCTION public.note_jit();
    `);
    await query(target, "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET jit = on', current_database()); END $$");
    await loadInto(target, { snapshot: payloadOf(snapshot), dir: snapshot.location, environment: ENVIRONMENT, attempt: 1, triggers: 'fire' });
    expect(await query<{ at: string; jit: string }>(target, 'SELECT at, jit FROM public.seen')).toEqual([
      { at: 'TRUNCATE', jit: 'off' },
      { at: 'INSERT', jit: 'on' },
    ]);
  });

  /** A fresh dump of the source whose manifest `edit` rewrites (as an older or newer dumper would write it). */
  async function snapshotWithManifest(edit: (manifest: WrittenSnapshot['manifest']) => WrittenSnapshot['manifest']): Promise<WrittenSnapshot> {
    const written = await dumpSource();
    const path = join(written.location, 'manifest.json');
    const manifest = edit(JSON.parse(readFileSync(path, 'utf8')) as WrittenSnapshot['manifest']);
    writeFileSync(path, JSON.stringify(manifest));
    return { ...written, manifest };
  }

  /** A copy of the snapshot whose manifest lists sequences by name (as the dumper now writes them), plus `extra`. */
  function snapshotWithNamedSequences(extra: object[]): Promise<WrittenSnapshot> {
    const named = { 'public.customers': 'public.customers_id_seq', '"Sales"."Order Items"': '"Sales"."Order Items_id_seq"' } as Record<string, string>;
    return snapshotWithManifest((manifest) => ({
      ...manifest,
      sequences: [...manifest.sequences.map((s) => ({ ...s, sequence: named[s.table] })), ...extra] as WrittenSnapshot['manifest']['sequences'],
    }));
  }

  it('sets sequences by their own name, also one that a default calls but no column owns', async () => {
    const target = await createTarget(`
      CREATE SEQUENCE public.member_numbers START 1000;
      SELECT setval('public.member_numbers', 5000);
      ALTER TABLE public.members ALTER COLUMN id SET DEFAULT nextval('public.member_numbers');`);
    const written = await snapshotWithNamedSequences([
      { table: 'public.members', schema: 'public', tableName: 'members', column: 'id', sequence: 'public.member_numbers', lastValue: '42', isCalled: true },
    ]);

    expect(await load(target, written)).toMatchObject({ kind: 'loaded' });

    expect(await sequencesOf(target)).toEqual([
      '"Sales"."Order Items_id_seq" 4 true',
      'customers_id_seq 5 true',
      'member_numbers 42 true',
    ]);
    expect(await query(target, `INSERT INTO public.members (team_id) VALUES (1) RETURNING id`)).toEqual([{ id: 43 }]);
  });

  it("sets the sequence the column draws from in the target where production names it otherwise (a table renamed there), not one that merely has production's name", async () => {
    const target = await createTarget(`
      CREATE SEQUENCE public.member_numbers START 1000;
      ALTER TABLE public.members ALTER COLUMN id SET DEFAULT nextval('public.member_numbers');
      CREATE SEQUENCE public.member_id_seq START 7;`);
    const written = await snapshotWithNamedSequences([
      { table: 'public.members', schema: 'public', tableName: 'members', column: 'id', sequence: 'public.member_id_seq', lastValue: '42', isCalled: true },
    ]);

    expect(await load(target, written)).toMatchObject({ kind: 'loaded' });

    expect(await sequencesOf(target)).toEqual([
      '"Sales"."Order Items_id_seq" 4 true',
      'customers_id_seq 5 true',
      'member_id_seq 7 false',
      'member_numbers 42 true',
    ]);
    expect(await query(target, `INSERT INTO public.members (team_id) VALUES (1) RETURNING id`)).toEqual([{ id: 43 }]);
  });

  it('fails naming a sequence the target does not have, and changes nothing', async () => {
    const target = await createTarget();
    const before = await contentsOf(target);
    const written = await snapshotWithNamedSequences([
      { table: 'public.members', schema: 'public', tableName: 'members', column: 'id', sequence: 'public.member_numbers', lastValue: '42', isCalled: true },
    ]);
    await expect(load(target, written)).rejects.toThrow('sequence public.member_numbers does not exist in the target');
    expect(await contentsOf(target)).toEqual(before);
  });

  /** A copy of the snapshot whose manifest lists these sequences no column uses. */
  function snapshotWithStandaloneSequences(standaloneSequences: unknown): Promise<WrittenSnapshot> {
    return snapshotWithManifest((manifest) => ({ ...manifest, standaloneSequences }) as WrittenSnapshot['manifest']);
  }

  it("sets a sequence no column uses (a trigger numbers tickets with it) to production's value", async () => {
    const target = await createTarget(`
      CREATE SEQUENCE "Sales"."ticket no";
      CREATE TABLE public.tickets (no bigint, customer int);
      CREATE FUNCTION public.number_ticket() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO public.tickets VALUES (nextval('"Sales"."ticket no"'), NEW.id); RETURN NEW; END $$;
      CREATE TRIGGER customers_ticket AFTER INSERT ON public.customers FOR EACH ROW EXECUTE FUNCTION public.number_ticket();`);
    const written = await snapshotWithStandaloneSequences([{ sequence: '"Sales"."ticket no"', lastValue: '7012', isCalled: true }]);

    expect(await load(target, written)).toMatchObject({ kind: 'loaded' });

    expect(await sequencesOf(target)).toContain('"Sales"."ticket no" 7012 true');
    await query(target, "INSERT INTO public.customers (name) VALUES ('new')");
    expect(await query(target, 'SELECT no::int FROM public.tickets')).toEqual([{ no: 7013 }]);
  });

  it('leaves a sequence no column uses that the target lacks unset, says so, and loads', async () => {
    const target = await createTarget();
    const written = await snapshotWithStandaloneSequences([{ sequence: 'public.invoice_no', lastValue: '41', isCalled: true }]);
    const log: string[] = [];
    const loaded = await loadInto(target, { snapshot: payloadOf(written), dir: written.location, environment: ENVIRONMENT, attempt: 1, log: (line) => log.push(line) });
    expect(loaded).toMatchObject({ kind: 'loaded' });
    expect(log).toContain('sequence(s) of production that no column uses are not in the target, left unset: public.invoice_no');
    expect(await contentsOf(target)).toEqual(await contentsOf(sourceUrl));
  });

  it('refuses a manifest whose standaloneSequences entry is malformed before touching the target', async () => {
    const target = await createTarget();
    const before = await contentsOf(target);
    for (const entries of [{}, [{ sequence: 'invoice_no', lastValue: '41', isCalled: true }], [{ sequence: 'public.invoice_no', lastValue: '41; DROP TABLE x', isCalled: true }]]) {
      const written = await snapshotWithStandaloneSequences(entries);
      await expect(load(target, written)).rejects.toThrow(/has a standaloneSequences entry that is not/);
    }
    expect(await contentsOf(target)).toEqual(before);
  });

  it('refuses a manifest whose sequences entry is malformed, naming manifest.json and the entry, before touching the target', async () => {
    const target = await createTarget();
    const before = await contentsOf(target);
    const good = { sequence: 'public.member_numbers', table: 'public.members', schema: 'public', tableName: 'members', column: 'id', lastValue: '42', isCalled: true };
    const malformed: [object | null, RegExp][] = [
      // What a hand-edited or truncated manifest looked like: a TypeError in the middle of the load before.
      [{ sequence: 'public.customers_id_seq', table: 'public.customers' }, /sequences\[2\]\.schema must be a non-empty string/],
      [{ ...good, column: '' }, /sequences\[2\]\.column must be a non-empty string/],
      [{ ...good, lastValue: 42 }, /sequences\[2\]\.lastValue must be an integer in a string/],
      [{ ...good, lastValue: '41; DROP TABLE x' }, /sequences\[2\]\.lastValue must be an integer in a string/],
      [{ ...good, isCalled: 'true' }, /sequences\[2\]\.isCalled must be true or false/],
      [{ ...good, sequence: 'not a "name' }, /sequences\[2\]\.sequence must be a qualified name/],
      [null, /sequences\[2\] must be an object/],
    ];
    const manifests: [(manifest: WrittenSnapshot['manifest']) => object, RegExp][] = malformed.map(([entry, message]) => [
      (manifest) => ({ ...manifest, sequences: [...manifest.sequences, entry] }),
      message,
    ]);
    // Not a list at all: read as empty before, which left every sequence of the environment behind production's.
    manifests.push([(manifest) => ({ ...manifest, sequences: { 0: manifest.sequences[0] } }), /sequences must be a list/]);
    for (const [edit, message] of manifests) {
      const written = await snapshotWithManifest((manifest) => edit(manifest) as WrittenSnapshot['manifest']);
      const error = await load(target, written).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(SnapshotFileError);
      expect((error as Error).message).toContain(join(written.location, 'manifest.json'));
      expect((error as Error).message).toMatch(message);
    }
    expect(await contentsOf(target)).toEqual(before);
    expect(await ledgerRows(target)).toEqual([]);
  });

  it('leaves every sequence as it was when the load fails after the sequences were set', async () => {
    // Refreshing this view fails with production's data (4 customers): after the sequences were set.
    const target = await createTarget(`
      CREATE SEQUENCE public.member_numbers; SELECT setval('public.member_numbers', 5000);
      CREATE MATERIALIZED VIEW public.fragile AS SELECT 1 / (count(*) - 4) AS x FROM public.customers;`);
    const written = await snapshotWithNamedSequences([
      { table: 'public.members', schema: 'public', tableName: 'members', column: 'id', sequence: 'public.member_numbers', lastValue: '42', isCalled: true },
    ]);
    const before = await contentsOf(target);
    expect(before['(sequences)']).toEqual(['"Sales"."Order Items_id_seq" 40 true', 'customers_id_seq 500 true', 'member_numbers 5000 true']);

    await expect(load(target, written)).rejects.toMatchObject({ code: '22012' }); // division_by_zero

    expect(await contentsOf(target)).toEqual(before);
    expect(await ledgerRows(target)).toEqual([]);
  });

  it('refreshes populated materialized views over the loaded tables, in dependency order, and leaves unpopulated ones alone', async () => {
    const target = await createTarget(`
      CREATE MATERIALIZED VIEW public.customer_count AS SELECT count(*) AS n FROM public.customers;
      CREATE VIEW public.noted_customers AS SELECT id, name FROM public.customers WHERE note <> '';
      CREATE MATERIALIZED VIEW public.noted_count AS SELECT count(*) AS n FROM public.noted_customers;
      CREATE MATERIALIZED VIEW public.count_of_counts AS SELECT (SELECT n FROM public.customer_count) + (SELECT n FROM public.noted_count) AS n;
      CREATE MATERIALIZED VIEW public.never_populated AS SELECT count(*) AS n FROM public.customers WITH NO DATA;
      CREATE FUNCTION public.customers_total() RETURNS bigint LANGUAGE sql STABLE AS 'SELECT count(*) FROM public.customers';
      CREATE MATERIALIZED VIEW public.counted_by_function AS SELECT public.customers_total() AS n;
      -- Reads another view through a function, and sorts before it: refreshed after it all the same.
      CREATE FUNCTION public.counts_total() RETURNS bigint LANGUAGE sql STABLE AS 'SELECT n FROM public.count_of_counts';
      CREATE MATERIALIZED VIEW public.a_report AS SELECT public.counts_total() AS n;
      -- An extension's function reads no snapshot table: a view over the environment's own table that calls one stays as it is.
      CREATE EXTENSION citext;
      CREATE TABLE public.env_notes (body text);
      CREATE MATERIALIZED VIEW public.env_note_count AS SELECT count(*) FILTER (WHERE strpos(body::citext, 'W'::citext) > 0) AS n FROM public.env_notes;
      INSERT INTO public.env_notes VALUES ('written after the view');`);
    expect(await query(target, 'SELECT n::int FROM public.count_of_counts')).toEqual([{ n: 3 }]);
    expect(await query(target, 'SELECT n::int FROM public.counted_by_function')).toEqual([{ n: 2 }]);

    expect(await load(target, snapshot)).toMatchObject({ kind: 'loaded' });

    // Production: 4 customers, 2 of them with a non-empty note.
    expect(await query(target, 'SELECT n::int FROM public.customer_count')).toEqual([{ n: 4 }]);
    expect(await query(target, 'SELECT n::int FROM public.noted_count')).toEqual([{ n: 2 }]);
    expect(await query(target, 'SELECT n::int FROM public.count_of_counts')).toEqual([{ n: 6 }]);
    // One that reads them through a function (which no dependency records) is refreshed too, as pg_restore refreshes every one.
    expect(await query(target, 'SELECT n::int FROM public.counted_by_function')).toEqual([{ n: 4 }]);
    expect(await query(target, 'SELECT n::int FROM public.env_note_count')).toEqual([{ n: 0 }]);
    expect(await query(target, 'SELECT n::int FROM public.a_report')).toEqual([{ n: 6 }]);
    expect(await query(target, "SELECT relispopulated FROM pg_class WHERE relname = 'never_populated'")).toEqual([{ relispopulated: false }]);
  });

  describe("the environment's own settings", () => {
    /** SQL that sets `settings` for the database (new sessions) and for the session running the rest. */
    const databaseSettings = (settings: Record<string, string>) =>
      Object.entries(settings)
        .map(([name, value]) => `DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET ${name} = %L', current_database(), '${value}'); END $$; SET ${name} = '${value}';`)
        .join('\n');

    it('computes generated columns, expression indexes and materialized views under the TimeZone a plain session of the environment has, as production did', async () => {
      const schema = `
        ${databaseSettings({ TimeZone: 'America/New_York' })}
        CREATE TABLE public.events (id int PRIMARY KEY, at timestamptz NOT NULL);
        CREATE FUNCTION public.local_day(timestamptz) RETURNS date LANGUAGE sql IMMUTABLE AS 'SELECT $1::date';
        CREATE TABLE public.orders (id int PRIMARY KEY, at timestamptz NOT NULL, day date GENERATED ALWAYS AS (public.local_day(at)) STORED);
        CREATE INDEX orders_by_local_day ON public.orders (public.local_day(at));
        CREATE MATERIALIZED VIEW public.daily AS SELECT at::date AS day, count(*) AS n, min(at)::text AS first FROM public.events GROUP BY 1;`;
      const { source, written, target } = await dumpedSourceAndTarget(
        'own_timezone',
        `${schema}
         INSERT INTO public.events VALUES (1, '2024-01-01 03:00+00'), (2, '2024-01-01 12:00+00');
         INSERT INTO public.orders VALUES (1, '2024-01-01 03:00+00');
         REFRESH MATERIALIZED VIEW public.daily;`,
        `${schema}
         INSERT INTO public.events VALUES (7, '2023-06-01 12:00+00');
         REFRESH MATERIALIZED VIEW public.daily;`,
      );

      expect(await loadInto(target, { snapshot: payloadOf(written), dir: written.location, environment: ENVIRONMENT, attempt: 1 })).toMatchObject({ kind: 'loaded' });

      // Production's rows: 03:00 UTC is still December 31st in New York (the load computed them under UTC: one row of 2 on 2024-01-01).
      expect(await contentOf(source, 'public.daily')).toEqual(['(2023-12-31,1,"2023-12-31 22:00:00-05")', '(2024-01-01,1,"2024-01-01 07:00:00-05")']);
      expect(await contentOf(target, 'public.daily')).toEqual(await contentOf(source, 'public.daily'));
      expect(await query(target, 'SELECT id, day::text FROM public.orders')).toEqual([{ id: 1, day: '2023-12-31' }]);
      // The rebuilt expression index holds what the environment's queries compute: found through it.
      const client = new Client({ connectionString: target });
      await client.connect();
      try {
        await client.query('SET enable_seqscan = off');
        const plan = (await client.query<{ 'QUERY PLAN': string }>("EXPLAIN SELECT id FROM public.orders WHERE public.local_day(at) = '2023-12-31'")).rows.map((r) => r['QUERY PLAN']).join('\n');
        expect(plan).toContain('orders_by_local_day');
        expect((await client.query("SELECT id FROM public.orders WHERE public.local_day(at) = '2023-12-31'")).rows).toEqual([{ id: 1 }]);
      } finally {
        await client.end();
      }
    });

    it("checks references from outside against generated keys computed as the load computes them, under the environment's TimeZone", async () => {
      const schema = `
        ${databaseSettings({ TimeZone: 'America/New_York' })}
        CREATE FUNCTION public.local_day(timestamptz) RETURNS date LANGUAGE sql IMMUTABLE AS 'SELECT $1::date';
        CREATE TABLE public.orders (id int PRIMARY KEY, at timestamptz NOT NULL, day date GENERATED ALWAYS AS (public.local_day(at)) STORED UNIQUE);`;
      const { written, target } = await dumpedSourceAndTarget(
        'own_timezone_refs',
        `${schema} INSERT INTO public.orders VALUES (1, '2024-01-01 03:00+00');`,
        // Only in the environment: a table outside the snapshot referencing the generated key, with
        // the day production computes (03:00 UTC is December 31st in New York).
        `${schema} INSERT INTO public.orders VALUES (1, '2024-01-01 03:00+00');
         CREATE TABLE public.refs (day date REFERENCES public.orders (day)); INSERT INTO public.refs VALUES ('2023-12-31');`,
      );
      expect(await loadInto(target, { snapshot: payloadOf(written), dir: written.location, environment: ENVIRONMENT, attempt: 1 })).toMatchObject({ kind: 'loaded' });
      expect(await query(target, 'SELECT day::text FROM public.refs')).toEqual([{ day: '2023-12-31' }]);
    });

    it('loads a role at its connection limit, computing with the pinned settings and saying so', async () => {
      const { written, target } = await dumpedSourceAndTarget('own_connlimit', SCHEMA_SQL, SCHEMA_SQL);
      // A role limited to the one connection the load holds: the read of its own settings is refused (53300).
      const role = `spec_loader_limit_${randomBytes(4).toString('hex')}`;
      await query(target, `CREATE ROLE "${role}" LOGIN CONNECTION LIMIT 1; DO $$ BEGIN EXECUTE format('ALTER DATABASE %I OWNER TO "${role}"', current_database()); END $$; REASSIGN OWNED BY CURRENT_USER TO "${role}";`);
      const asLoader = new URL(target);
      asLoader.username = role;
      const database = new TargetDatabase(asLoader.toString());
      try {
        const lines: string[] = [];
        const result = await loadSnapshot(database, { snapshot: payloadOf(written), dir: written.location, environment: ENVIRONMENT, attempt: 1, log: (line) => lines.push(line) });
        expect(result).toMatchObject({ kind: 'loaded' });
        expect(lines).toContainEqual(expect.stringMatching(/^could not open a connection to read the environment's own TimeZone, DateStyle, IntervalStyle, extra_float_digits \(too many connections for role "spec_loader_limit_[0-9a-f]+"\): computing with the loader's pinned ones/));
      } finally {
        await database.close();
        await query(target, `REASSIGN OWNED BY "${role}" TO CURRENT_USER; DROP OWNED BY "${role}"`);
        await query(ADMIN_URL, `DROP ROLE "${role}"`);
      }
    });

    it('reads the CSV as the dumper wrote it under unusual DateStyle, IntervalStyle and TimeZone, and computes with them', async () => {
      // What the COPY reads keeps array_nulls and xmloption pinned: this database would read {x,NULL}'s NULL as a string and refuse a fragment.
      const settings = { TimeZone: 'Asia/Kolkata', DateStyle: 'SQL, DMY', IntervalStyle: 'sql_standard', extra_float_digits: '0', array_nulls: 'off', xmloption: 'document' };
      const schema = `
        ${databaseSettings(settings)}
        CREATE FUNCTION public.settings_seen(int) RETURNS text LANGUAGE sql IMMUTABLE
          AS $$SELECT concat_ws(' | ', current_setting('TimeZone'), current_setting('DateStyle'), current_setting('IntervalStyle'), current_setting('extra_float_digits'))$$;
        CREATE TABLE public.odd_values (
          id int PRIMARY KEY, d date[], ts timestamptz[], tt timetz, plain timestamp, iv interval[], f float8, tags text[], doc xml,
          seen text GENERATED ALWAYS AS (public.settings_seen(id)) STORED);
        CREATE MATERIALIZED VIEW public.odd_text AS SELECT id, d::text AS d, ts::text AS ts, iv::text AS iv, f::text AS f FROM public.odd_values;`;
      // Rebuilt and re-added from definitions read under the pinned settings, run under these: their constants must read the same.
      const definitionsSql = `
        CREATE INDEX odd_recent ON public.odd_values (id) WHERE ts[1] > timestamptz '2020-01-02 03:00:00+00' AND d[1] > date '2000-01-02' AND iv[1] <> interval '-1 days +02:00:00';
        ALTER TABLE public.odd_values ADD CONSTRAINT odd_checked CHECK (d[1] < date '2000-01-02' AND iv[2] > interval '-1 years -2 mons +3 days') NOT VALID;`;
      const definitions = (url: string) =>
        query<{ def: string }>(
          url,
          "SELECT pg_get_indexdef('public.odd_recent'::regclass) AS def UNION ALL SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'odd_checked'",
        );
      const { source, written, target } = await dumpedSourceAndTarget(
        'own_odd_settings',
        `${schema}
         INSERT INTO public.odd_values (id, d, ts, tt, plain, iv, f, tags, doc) VALUES (1,
           ARRAY[date '2024-01-02', date '2024-12-11', date '0044-03-15 BC', date '10000-12-31', 'infinity'],
           ARRAY[timestamptz '2024-01-02 03:04:05.123456+00', timestamptz '0044-03-15 12:00:00+00 BC', timestamptz '1880-01-01 00:00:00+00'],
           '03:04:05+05:30', '2024-01-02 03:04:05',
           ARRAY[interval '-1 days +02:00:00', interval '-1 years -2 mons +3 days -04:05:06.789', interval '1 day -02:00:00', interval '-00:00:01', interval '-10 mons', interval '-7 days +01:00:00'],
           0.1, ARRAY['x', NULL], xmlparse(content 'abc<a/>'));
         REFRESH MATERIALIZED VIEW public.odd_text;`,
        `${schema}
         ${definitionsSql}
         REFRESH MATERIALIZED VIEW public.odd_text;`,
      );
      const before = await definitions(target);

      expect(await loadInto(target, { snapshot: payloadOf(written), dir: written.location, environment: ENVIRONMENT, attempt: 1 })).toMatchObject({ kind: 'loaded' });

      expect(await contentOf(target, 'public.odd_values')).toEqual(await contentOf(source, 'public.odd_values'));
      expect(await contentOf(target, 'public.odd_text')).toEqual(await contentOf(source, 'public.odd_text'));
      const [row] = await query<{ seen: string; tag_null: boolean; doc: string; f: string; d: string }>(
        target,
        "SELECT seen, tags[2] IS NULL AS tag_null, doc::text AS doc, f::text AS f, array_to_string(array(SELECT to_char(x, 'YYYY-MM-DD BC') FROM unnest(d) x), ' ') AS d FROM public.odd_values",
      );
      expect(row).toEqual({
        seen: 'Asia/Kolkata | SQL, DMY | sql_standard | 0',
        tag_null: true,
        doc: 'abc<a/>',
        f: '0.1',
        d: '2024-01-02 AD 2024-12-11 AD 0044-03-15 BC 10000-12-31 AD', // and infinity (to_char gives it no text)
      });
      const [view] = await query<{ iv: string; ts: string }>(target, 'SELECT iv, ts FROM public.odd_text');
      // The refresh printed under the environment's own IntervalStyle and TimeZone.
      expect(view.iv).toContain('-1-2 +3 -4:05:06.789');
      expect(view.ts).toContain('08:34:05.123456 IST');
      expect(await definitions(target)).toEqual(before);
      expect(before.map((r) => r.def).join('\n')).toContain("'02/01/2020 08:30:00 IST'::timestamp with time zone");
    });
  });

  describe('rebuilt indexes and constraints', () => {
    const tablespace = `spec_loader_ts_${randomBytes(4).toString('hex')}`;
    let firstDatabase = 0;
    beforeAll(async () => {
      firstDatabase = databases.length;
      const admin = new Client({ connectionString: ADMIN_URL });
      await admin.connect();
      try {
        // An in-place tablespace (PostgreSQL 15's developer option): no directory on the server needed.
        await admin.query('SET allow_in_place_tablespaces = on');
        await admin.query(`CREATE TABLESPACE "${tablespace}" LOCATION ''`);
      } finally {
        await admin.end();
      }
    });
    afterAll(async () => {
      // A tablespace can only be dropped once the databases using it are gone.
      for (const name of databases.splice(firstDatabase)) {
        await query(ADMIN_URL, 'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [name]);
        await query(ADMIN_URL, `DROP DATABASE IF EXISTS "${name}"`);
      }
      await query(ADMIN_URL, `DROP TABLESPACE IF EXISTS "${tablespace}"`);
    });

    /** What pg_dump would write for them: definitions, tablespaces, storage parameters, timing, comments, clustering. */
    const definitions = (url: string) =>
      query<{ def: string }>(
        url,
        `SELECT 'index ' || i.indexname || ' ' || i.indexdef || ' tablespace=' || coalesce(i.tablespace, '-') || ' options=' || coalesce(c.reloptions::text, '-')
                || ' clustered=' || x.indisclustered || ' comment=' || coalesce(obj_description(c.oid, 'pg_class'), '-')
                || ' statistics=' || coalesce((SELECT string_agg(a.attnum || ':' || a.attstattarget, ',') FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attstattarget >= 0), '-') AS def
           FROM pg_indexes i JOIN pg_class c ON c.oid = format('%I.%I', i.schemaname, i.indexname)::regclass JOIN pg_index x ON x.indexrelid = c.oid
          WHERE i.schemaname IN ('public', 'Sales')
         UNION ALL
         SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid) || ' deferrable=' || condeferrable
                || ' deferred=' || condeferred || ' validated=' || convalidated || ' comment=' || coalesce(obj_description(oid, 'pg_constraint'), '-')
           FROM pg_constraint WHERE connamespace::regnamespace::text IN ('public', '"Sales"')
         ORDER BY 1`,
      );

    it('are exactly the originals: tablespace, storage parameters, WHERE, DEFERRABLE, statistics targets and comments', async () => {
      const target = await createTarget(`
        ALTER TABLE public.members DROP CONSTRAINT members_pkey CASCADE;
        ALTER TABLE public.members ADD CONSTRAINT members_pkey PRIMARY KEY (id) WITH (fillfactor = 70) USING INDEX TABLESPACE "${tablespace}";
        ALTER TABLE public.teams ADD CONSTRAINT teams_leader_fk FOREIGN KEY (leader_id) REFERENCES public.members (id) NOT VALID;
        ALTER TABLE public.members ADD CONSTRAINT members_nick_unique UNIQUE (nick) DEFERRABLE INITIALLY DEFERRED;
        CREATE UNIQUE INDEX customers_name_note ON public.customers (name) WITH (fillfactor = 60) TABLESPACE "${tablespace}" WHERE note IS NOT NULL;
        CREATE INDEX "Order Items by qty" ON "Sales"."Order Items" ("qty, total" DESC) INCLUDE ("say ""hi""") WITH (deduplicate_items = off);
        ALTER TABLE "Sales"."Order Items" CLUSTER ON "Order Items by qty";
        COMMENT ON CONSTRAINT members_pkey ON public.members IS E'a back\\\\slash and a quote: ''';
        COMMENT ON CONSTRAINT members_team_id_fkey ON public.members IS 'every member has a team';
        COMMENT ON CONSTRAINT members_nick_unique ON public.members IS 'one nick each';
        COMMENT ON INDEX public.customers_name_note IS 'named, noted';
        CREATE INDEX customers_lower_name ON public.customers (id, lower(name));
        ALTER INDEX public.customers_lower_name ALTER COLUMN 2 SET STATISTICS 500;
        CREATE INDEX customers_upper_name ON public.customers (upper(name));
        ALTER INDEX public.customers_upper_name ALTER COLUMN 1 SET STATISTICS 0;`);
      const before = await definitions(target);
      const text = before.map((r) => r.def).join('\n');
      expect(text).toContain('statistics=2:500');
      // 0 (no statistics for the expression) is a setting too; -1 is the default.
      expect(text).toContain('statistics=1:0');
      expect(text).toContain(`members_pkey CREATE UNIQUE INDEX members_pkey ON public.members USING btree (id) WITH (fillfactor='70') tablespace=${tablespace}`);
      expect(text).toContain('comment=a back\\slash and a quote: \'');
      expect(text).toMatch(/teams_leader_fk .* validated=false/);

      expect(await load(target, snapshot)).toMatchObject({ kind: 'loaded' });

      expect(await definitions(target)).toEqual(before);
      expect(await contentsOf(target)).toEqual(await contentsOf(sourceUrl));
    });
  });
});

/**
 * A target with a table of the environment's own, outside the snapshot, at one end of a foreign key
 * to a snapshot table (`extraSql`), which an app session (`app`) holds in an open transaction that
 * read it (`appSql`): the load drops and re-adds that key, and ALTER TABLE ... DROP CONSTRAINT takes
 * ACCESS EXCLUSIVE on both of its tables. The app's transaction ends after `work`, whatever happens.
 */
async function withOutsideTableHeld(extraSql: string, appSql: string, work: (held: { target: string; appPid: number; release: () => Promise<void> }) => Promise<void>): Promise<void> {
  const target = await createTarget(extraSql);
  const app = new Client({ connectionString: target, application_name: 'app' });
  await app.connect();
  let released: Promise<unknown> | undefined;
  const release = async () => {
    released ??= app.query('ROLLBACK').catch(() => undefined);
    await released;
  };
  try {
    await app.query(`BEGIN; ${appSql}`);
    const [{ pid }] = (await app.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows;
    await work({ target, appPid: pid, release });
  } finally {
    await release();
    await app.end();
  }
}

describe('a load while an app holds a table outside the snapshot that references one of its tables', () => {
  const NOTES = 'CREATE TABLE public.env_notes (id int PRIMARY KEY, customer_id int REFERENCES public.customers (id)); INSERT INTO public.env_notes VALUES (1, NULL);';
  const READ = 'SELECT count(*) FROM public.env_notes';

  it("fails after the session's lock_timeout with 55P03 naming that table and the session holding it, the environment unchanged", async () => {
    await withOutsideTableHeld(NOTES, READ, async ({ target, appPid }) => {
      const before = await contentsOf(target, [...TABLES, 'public.env_notes']);
      const keys = await foreignKeys(target);
      const started = Date.now();
      const error = await loadInto(target, { snapshot: payloadOf(snapshot), dir: snapshot.location, environment: ENVIRONMENT, attempt: 1 }, { lockTimeoutMs: 1_500 }).then(
        () => undefined,
        (e: unknown) => e as Error & { code?: string },
      );
      expect(Date.now() - started).toBeLessThan(15_000);
      expect(error).toMatchObject({ code: '55P03' });
      // Was `canceling statement due to lock timeout`, from the DROP CONSTRAINT, naming nothing.
      expect(error?.message).toMatch(new RegExp(`^waited \\d+\\.\\d s \\(lock_timeout\\) for ACCESS EXCLUSIVE locks on public\\.env_notes: pid ${appPid} \\(app, user \\w+, idle in transaction since [^)]+\\) holds public\\.env_notes$`));
      expect(await contentsOf(target, [...TABLES, 'public.env_notes'])).toEqual(before);
      expect(await foreignKeys(target)).toEqual(keys);
      expect(await ledgerRows(target)).toEqual([]);
    });
  });

  it('gives up within about a second of the app stopping (the load rolls back, the environment unchanged)', async () => {
    // The DROP CONSTRAINT waited for the session's whole 60 s lock_timeout, a stop or not.
    await withOutsideTableHeld(NOTES, READ, (held) =>
      expectStopToEndTheWait(held, [...TABLES, 'public.env_notes'], 2_500, /^the app is stopping: .*public\.env_notes: pid \d+ \(app, .*holds public\.env_notes$/),
    );
  });
});

describe('a load while an app holds a table outside the snapshot that one of its tables references', () => {
  it("fails after the session's lock_timeout with 55P03 naming that table and the session holding it", async () => {
    // The environment's own list of regions, which its customers must come from (NULL for all of production's).
    const REGIONS = 'CREATE TABLE public.env_regions (id int PRIMARY KEY); ALTER TABLE public.customers ADD COLUMN region_id int REFERENCES public.env_regions (id);';
    await withOutsideTableHeld(REGIONS, 'SELECT count(*) FROM public.env_regions', async ({ target, appPid }) => {
      const before = await contentsOf(target);
      const error = await loadInto(target, { snapshot: payloadOf(snapshot), dir: snapshot.location, environment: ENVIRONMENT, attempt: 1 }, { lockTimeoutMs: 1_500 }).then(
        () => undefined,
        (e: unknown) => e as Error & { code?: string },
      );
      expect(error).toMatchObject({ code: '55P03' });
      expect(error?.message).toMatch(new RegExp(`on public\\.env_regions: pid ${appPid} \\(app, .*holds public\\.env_regions$`));
      expect(await contentsOf(target)).toEqual(before);
    });
  });
});
