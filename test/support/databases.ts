import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';

/** Tests reach the machine's PostgreSQL; override with TEST_PG_URL (any database, used for admin work). */
export const ADMIN_URL = process.env.TEST_PG_URL ?? 'postgresql://root@127.0.0.1:5432/postgres';

export function databaseUrl(name: string): string {
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

export function uniqueName(prefix: string): string {
  return `${prefix}_${randomBytes(4).toString('hex')}`;
}

async function admin<T>(work: (client: Client) => Promise<T>): Promise<T> {
  const client = new Client({ connectionString: ADMIN_URL });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

export interface TestDatabase {
  name: string;
  url: string;
  query<R extends Record<string, unknown> = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<R[]>;
  drop(): Promise<void>;
}

/** A database of this test's own, dropped by drop() (connections are terminated first). */
export async function createDatabase(prefix: string, setupSql?: string): Promise<TestDatabase> {
  const name = uniqueName(prefix);
  await admin((client) => client.query(`CREATE DATABASE "${name}"`));
  const url = databaseUrl(name);
  const query = async <R extends Record<string, unknown>>(sql: string, params?: unknown[]): Promise<R[]> => {
    const client = new Client({ connectionString: url });
    await client.connect();
    try {
      return (await client.query<R>(sql, params)).rows;
    } finally {
      await client.end();
    }
  };
  if (setupSql) await query(setupSql);
  return {
    name,
    url,
    query,
    drop: () =>
      admin(async (client) => {
        await client.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [name]);
        await client.query(`DROP DATABASE IF EXISTS "${name}"`);
      }),
  };
}

/** A source database to dump, with an empty SNAPSHOT_DIR of its own (`dir`); drop() removes both. */
export interface DumpSource extends TestDatabase {
  dir: string;
}

export async function createDumpSource(prefix: string, setupSql: string): Promise<DumpSource> {
  const dir = mkdtempSync(join(tmpdir(), `spec-${prefix}-`));
  const removeDir = () => rmSync(dir, { recursive: true, force: true });
  const db = await createDatabase(prefix, setupSql).catch((error: unknown) => {
    removeDir();
    throw error;
  });
  return {
    ...db,
    dir,
    drop: async () => {
      await db.drop();
      removeDir();
    },
  };
}

/** Every row of a table as PostgreSQL's own text form, sorted: equal arrays mean equal content. */
export async function tableContent(db: TestDatabase, qualifiedTable: string): Promise<string[]> {
  const rows = await db.query<{ row: string }>(`SELECT t::text AS row FROM ${qualifiedTable} t ORDER BY 1`);
  return rows.map((r) => r.row);
}

/** Every sequence of `db` with its state (`name last_value is_called`): sequences are part of "untouched". */
export async function sequenceStates(db: TestDatabase): Promise<string[]> {
  const names = await db.query<{ name: string }>(
    `SELECT c.oid::regclass::text AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'S' AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`,
  );
  const states: string[] = [];
  for (const { name } of names) states.push(`${name} ${(await db.query<{ s: string }>(`SELECT last_value || ' ' || is_called AS s FROM ${name}`))[0].s}`);
  return states;
}

/** What "the target is untouched" compares: the rows of `tables` and the state of every sequence. */
export async function contentAndSequences(db: TestDatabase, tables: string[]): Promise<unknown[]> {
  return [...(await Promise.all(tables.map((table) => tableContent(db, table)))), await sequenceStates(db)];
}

/**
 * What `list` still returns after up to `withinMs` of looking again every 50 ms (empty as soon as it
 * is): sessions a test expects the server to end, which it does a little after their client goes.
 */
export async function remainingAfter<T>(list: () => Promise<T[]>, withinMs = 2_000): Promise<T[]> {
  const deadline = Date.now() + withinMs;
  let left = await list();
  while (left.length && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    left = await list();
  }
  return left;
}
