import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, Pool } from 'pg';
import { watchProductionLockWaits } from '@app/common/database';
import { parseRules } from '@app/common/rules';
import { FsSnapshotStore, type SnapshotStore } from '@app/common/snapshot-store';
import { createDatabase, remainingAfter, type TestDatabase } from '../../../test/support/databases';
import { writeSnapshot } from './snapshot-writer';

/** The fs store in `dir`, each upload's put of a table waiting for `beforePut` first: a slow or held-back store. */
function storeWithPutHook(dir: string, beforePut: (name: string) => Promise<void>): SnapshotStore {
  const inner = new FsSnapshotStore(dir);
  return Object.assign(Object.create(inner) as SnapshotStore, {
    begin: async (snapshotId: string) => {
      const upload = await inner.begin(snapshotId);
      return {
        ...upload,
        put: async (name: string, body: Readable) => {
          await beforePut(name);
          return upload.put(name, body);
        },
      };
    },
  });
}

/**
 * A DDL in production while the dump still holds its locks, on a table the dump has read already
 * or (with one connection) not yet: the attempt ends within about a second and the DDL goes
 * through, instead of waiting (with every query queued behind it) for the rest of the dump.
 */
describe('a dump while production runs DDL', () => {
  let source: TestDatabase;
  const dir = mkdtempSync(join(tmpdir(), 'db-fanout-lockwatch-'));

  /** The fs store, with the big table's upload held back `holdMs` (a slow store): the dump lasts that long. */
  const slowStore = (holdMs: number): SnapshotStore =>
    storeWithPutHook(dir, async (name) => {
      if (name.includes('big')) await sleep(holdMs);
    });

  beforeAll(async () => {
    source = await createDatabase(
      'lockwatch',
      `CREATE TABLE public.big (id int PRIMARY KEY, pad text); INSERT INTO public.big SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g;
       CREATE TABLE public.small (id int PRIMARY KEY); INSERT INTO public.small VALUES (1); ANALYZE;`,
    );
  });
  afterAll(async () => {
    await source?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it.each([
    { jobs: 1, what: 'one connection: a table not read yet' },
    { jobs: 2, what: 'two connections: a table a worker has read already' },
  ])('ends the attempt and lets an ALTER TABLE through ($what)', async ({ jobs }) => {
    const started = Date.now();
    const dumping = writeSnapshot({ date: '2024-03-01', sourceDatabaseUrl: source.url, snapshotDir: dir, store: slowStore(8_000), tables: [], excludeTables: [], jobs }).then(
      () => ({ error: undefined, at: Date.now() - started }),
      (error: unknown) => ({ error, at: Date.now() - started }),
    );
    await sleep(1_500);
    const production = new Client({ connectionString: source.url });
    await production.connect();
    try {
      const ddlIssued = Date.now() - started;
      await production.query(`ALTER TABLE public.small ADD COLUMN added_${jobs} int`);
      const ddlDone = Date.now() - started;
      const dump = await dumping;
      expect(dump.error).toMatchObject({
        code: '55P03',
        message: 'a session in production waits for a lock this dump holds on public.small (DDL or TRUNCATE): this attempt ends and lets it through',
      });
      // Within about the watch's second, where it used to wait for the 8 s upload to end.
      expect(ddlDone - ddlIssued).toBeLessThan(4_000);
      expect(dump.at).toBeLessThan(6_000);
      // Nothing of the ended attempt is left for a loader to take.
      expect(readdirSync(dir).filter((name) => name.startsWith('prod_snapshot_'))).toEqual([]);
    } finally {
      await production.end();
    }
  }, 30_000);

  it("finishes the dump when a DBA ends the watch's session between two of its looks", async () => {
    const dumping = writeSnapshot({ date: '2024-03-03', sourceDatabaseUrl: source.url, snapshotDir: dir, store: slowStore(3_000), tables: [], excludeTables: [], jobs: 1 });
    const admin = new Client({ connectionString: source.url });
    await admin.connect();
    try {
      let ended = 0;
      for (let tries = 0; !ended && tries < 50; tries++) {
        await sleep(100);
        // The watch idles between looks, its last statement the lock query.
        const { rowCount } = await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'db-fanout-dumper' AND state = 'idle' AND query LIKE '%pg_blocking_pids%'");
        ended = rowCount ?? 0;
      }
      expect(ended).toBe(1);
      const written = await dumping;
      expect(written.manifest.tables.map((t) => t.name)).toEqual(['public.big', 'public.small']);
    } finally {
      await admin.end();
    }
  }, 30_000);

  it('leaves a dump that nobody waits for alone', async () => {
    const written = await writeSnapshot({ date: '2024-03-02', sourceDatabaseUrl: source.url, snapshotDir: dir, store: slowStore(1_500), tables: [], excludeTables: [], jobs: 2 });
    expect(written.manifest.tables.map((t) => t.name)).toEqual(['public.big', 'public.small']);
  });
});

/**
 * With DUMP_RULES the dump holds its locks while the rules are prepared (the subset's closure, the
 * scans of jsonb arrays: full scans, minutes on a large database) before a single COPY. A DDL then
 * is seen as soon as at any other time, and the attempt ends before it has written anything.
 */
describe('a dump preparing its rules while production runs DDL', () => {
  let source: TestDatabase;
  const dir = mkdtempSync(join(tmpdir(), 'db-fanout-lockwatch-rules-'));
  /** 12 rows at half a second each: the subset's scan of public.a takes 6 s, the locks held throughout. */
  const SLOW_SUBSET = parseRules('strict: false\nsubset:\n  public.a: "pg_sleep(0.5) IS NOT NULL"\n', 'rules.yaml');

  const dumperSessions = () => source.query(`SELECT pid, query FROM pg_stat_activity WHERE application_name = 'db-fanout-dumper' AND datname = current_database()`);

  beforeAll(async () => {
    source = await createDatabase(
      'lockwatch_rules',
      `CREATE TABLE public.a (id int PRIMARY KEY, note text); INSERT INTO public.a SELECT g, 'x' FROM generate_series(1, 12) g;
       CREATE TABLE public.b (id int PRIMARY KEY, note text); INSERT INTO public.b SELECT g, 'y' FROM generate_series(1, 8) g;`,
    );
  });
  afterAll(async () => {
    await source?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it.each([{ jobs: 1 }, { jobs: 2 }])('ends the attempt during the subset scan and lets an ALTER TABLE and the queries queued behind it through (jobs $jobs)', async ({ jobs }) => {
    const started = Date.now();
    const dumping = writeSnapshot({ date: '2024-03-03', sourceDatabaseUrl: source.url, snapshotDir: dir, tables: [], excludeTables: [], jobs, rules: SLOW_SUBSET }).then(
      () => ({ error: undefined, at: Date.now() - started }),
      (error: unknown) => ({ error, at: Date.now() - started }),
    );
    const production = new Client({ connectionString: source.url });
    const reader = new Client({ connectionString: source.url });
    await production.connect();
    await reader.connect();
    try {
      // The dump holds its locks and is inside the subset's scan (no COPY has started).
      const deadline = Date.now() + 5_000;
      while (!(await dumperSessions()).some((session) => String(session.query).includes('pg_sleep'))) {
        if (Date.now() > deadline) throw new Error('the dump never reached its subset scan');
        await sleep(20);
      }
      await sleep(300);
      const ddlIssued = Date.now();
      const ddl = production.query(`ALTER TABLE public.b ADD COLUMN z_${jobs} int`).then(() => Date.now() - ddlIssued);
      await sleep(200);
      const readIssued = Date.now();
      const read = reader.query('SELECT count(*)::int AS n FROM public.b').then(() => Date.now() - readIssued);
      const [ddlMs, readMs, dump] = await Promise.all([ddl, read, dumping]);
      expect(dump.error).toMatchObject({
        code: '55P03',
        message: 'a session in production waits for a lock this dump holds on public.b (DDL or TRUNCATE): this attempt ends and lets it through',
      });
      // Within about the watch's second, where both waited for the rest of the 6 s scan and the dump.
      expect({ ddlMs: ddlMs < 2_500, readMs: readMs < 2_500 }).toEqual({ ddlMs: true, readMs: true });
      expect(dump.at).toBeLessThan(5_000);
      // Ended before the store was written to: nothing at all is left in it.
      expect(readdirSync(dir)).toEqual([]);
      // The dump's sessions are ended on the server too, not left running the scan (they notice
      // their closed connection only when they next write to it).
      expect(await remainingAfter(dumperSessions)).toEqual([]);
    } finally {
      await production.end();
      await reader.end();
    }
  }, 30_000);
});

/**
 * The watch ends a blocking attempt's sessions on the server too, but only for an attempt it ended
 * itself: one that had ended already (a worker failed first) let its sessions go before the watch
 * looked, and a pid freed then may belong to another session by the time it is terminated.
 */
describe('the lock watch, once the attempt has ended already', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createDatabase('lockwatch_ended', 'CREATE TABLE public.t (id int);');
  });
  afterAll(() => db?.drop());

  it('terminates no session when the dump says it had ended already', async () => {
    // Stands for a session that took over a pid the ended attempt freed, and holds a lock production waits for.
    const holder = new Client({ connectionString: db.url });
    const waiter = new Client({ connectionString: db.url });
    const pool = new Pool({ connectionString: db.url, max: 1 });
    await holder.connect();
    await waiter.connect();
    holder.on('error', () => undefined);
    try {
      await holder.query('BEGIN');
      await holder.query('LOCK TABLE public.t IN ACCESS SHARE MODE');
      const { rows } = await holder.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      const altering = waiter.query('ALTER TABLE public.t ADD COLUMN x int');
      let told = 0;
      const watch = watchProductionLockWaits(pool, [rows[0].pid], () => (told++, false), 100);
      for (const deadline = Date.now() + 5_000; told === 0 && Date.now() < deadline; ) await sleep(50);
      await watch.stop();
      expect(told).toBe(1);
      // Still there, its transaction intact.
      expect((await holder.query<{ one: number }>('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
      await holder.query('ROLLBACK');
      await altering;
    } finally {
      await holder.end().catch(() => undefined);
      await waiter.end();
      await pool.end();
    }
  });
});

/**
 * A CREATE INDEX CONCURRENTLY waits for every older snapshot, the dump's included (a virtualxid
 * lock, not a relation one), while it holds SHARE UPDATE EXCLUSIVE on its table. A DDL that
 * conflicts with that (a foreign key to the table, a trigger, a plain CREATE INDEX) queues behind
 * the CIC, and the app's writes queue behind the DDL: nobody waits for the dump directly, and all of
 * them waited for the whole dump. The watch follows the chain; a CIC with nobody behind it blocks
 * no query and leaves the dump alone.
 */
describe('a dump while production runs a CREATE INDEX CONCURRENTLY', () => {
  let source: TestDatabase;
  const dir = mkdtempSync(join(tmpdir(), 'db-fanout-lockwatch-cic-'));

  /** The fs store, with every upload held until `gate` opens: the dump holds its snapshot until then. */
  const gatedStore = (gate: Promise<void>, reached: () => void): SnapshotStore =>
    storeWithPutHook(dir, async () => {
      reached();
      await gate;
    });

  /** Until the session running `query` waits for a lock of type `locktype` (at most 5 s). */
  const waitingOn = async (client: Client, query: string, locktype: string) => {
    for (const deadline = Date.now() + 5_000; ; await sleep(20)) {
      const { rows } = await client.query(
        `SELECT 1 FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid AND NOT l.granted WHERE a.datname = current_database() AND a.query = $1 AND l.locktype = $2`,
        [query, locktype],
      );
      if (rows.length) return;
      if (Date.now() > deadline) throw new Error(`${query} never waited on a ${locktype} lock`);
    }
  };

  /** A dump whose uploads wait for the gate, and a promise of it once it has reached its first upload. */
  const gatedDump = (date: string) => {
    let open!: () => void;
    let reached!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const atUpload = new Promise<void>((resolve) => (reached = resolve));
    const started = Date.now();
    const dumping = writeSnapshot({ date, sourceDatabaseUrl: source.url, snapshotDir: dir, store: gatedStore(gate, reached), tables: [], excludeTables: [], jobs: 1 }).then(
      (written) => ({ written, error: undefined, at: Date.now() - started }),
      (error: unknown) => ({ written: undefined, error, at: Date.now() - started }),
    );
    return { dumping, atUpload, open };
  };

  beforeEach(async () => {
    source = await createDatabase(
      'lockwatch_cic',
      `CREATE TABLE public.orders (id int PRIMARY KEY, v text); INSERT INTO public.orders SELECT g, 'x' FROM generate_series(1, 1000) g;
       CREATE TABLE public.lines (id int PRIMARY KEY, order_id int); INSERT INTO public.lines SELECT g, g FROM generate_series(1, 1000) g;`,
    );
  });
  afterEach(async () => {
    await source?.drop();
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('ends the attempt when a DDL waits behind a CIC that waits for the dump, and lets the DDL and the writes queued behind it through', async () => {
    const dump = gatedDump('2024-03-04');
    // Held for 10 s at most: without the watch, everything below waited exactly that long.
    const held = setTimeout(dump.open, 10_000);
    const [cic, ddl, app, observer] = [0, 1, 2, 3].map(() => new Client({ connectionString: source.url }));
    try {
      await Promise.all([cic, ddl, app, observer].map((client) => client.connect()));
      await dump.atUpload;
      const cicSql = 'CREATE INDEX CONCURRENTLY orders_v ON public.orders (v)';
      const cicDone = cic.query(cicSql);
      await waitingOn(observer, cicSql, 'virtualxid');
      const ddlSql = 'ALTER TABLE public.lines ADD CONSTRAINT lines_order_fk FOREIGN KEY (order_id) REFERENCES public.orders (id)';
      const ddlIssued = Date.now();
      const ddlDone = ddl.query(ddlSql).then(() => Date.now() - ddlIssued);
      await waitingOn(observer, ddlSql, 'relation');
      const insertIssued = Date.now();
      const insertDone = app.query("INSERT INTO public.orders VALUES (5000, 'app')").then(() => Date.now() - insertIssued);
      const [ddlMs, insertMs] = await Promise.all([ddlDone, insertDone, cicDone]);
      // The held upload is let go only now (the store's put does not watch its body): the attempt had ended before.
      dump.open();
      const result = await dump.dumping;
      expect(result.error).toMatchObject({
        code: '55P03',
        message:
          'a session in production waits for a lock on public.orders behind a session that waits for this dump (such as a CREATE INDEX CONCURRENTLY waiting for its snapshot to end): this attempt ends and lets it through',
      });
      // Within about the watch's second, where both waited out the 10 s dump.
      expect({ ddlMs: ddlMs < 3_000, insertMs: insertMs < 3_000 }).toEqual({ ddlMs: true, insertMs: true });
      expect(readdirSync(dir).filter((name) => name.startsWith('prod_snapshot_'))).toEqual([]);
    } finally {
      clearTimeout(held);
      dump.open();
      await dump.dumping;
      for (const client of [cic, ddl, app, observer]) await client.end().catch(() => undefined);
    }
  }, 30_000);

  it('leaves the dump alone while a CIC waits for its snapshot with nobody queued behind it', async () => {
    const dump = gatedDump('2024-03-05');
    const [cic, app, observer] = [0, 1, 2].map(() => new Client({ connectionString: source.url }));
    try {
      await Promise.all([cic, app, observer].map((client) => client.connect()));
      await dump.atUpload;
      const cicSql = 'CREATE INDEX CONCURRENTLY orders_v ON public.orders (v)';
      const cicDone = cic.query(cicSql);
      await waitingOn(observer, cicSql, 'virtualxid');
      // The app's writes go on beside the CIC: they conflict with nothing it holds.
      await app.query("INSERT INTO public.orders VALUES (5000, 'app')");
      await sleep(2_500);
      dump.open();
      const result = await dump.dumping;
      expect(result.error).toBeUndefined();
      expect(result.written?.manifest.tables.map((t) => t.name)).toEqual(['public.lines', 'public.orders']);
      await cicDone;
    } finally {
      dump.open();
      await dump.dumping;
      for (const client of [cic, app, observer]) await client.end().catch(() => undefined);
    }
  }, 30_000);
});
