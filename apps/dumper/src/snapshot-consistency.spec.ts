import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client, type PoolClient } from 'pg';
import type { SnapshotManifest } from '@app/common/contract';
import { createDumpSource, type DumpSource } from '../../../test/support/databases';
import { writeSnapshot, type WrittenSnapshot } from './snapshot-writer';
import { type DumpSessionSource, SourceDatabase } from './source-database';

const DATE = '2024-01-05';
/** The session a dump's first worker opens (see GatedSource). */
const FIRST_WORKER = 3;

/**
 * The real source, except that the `gatedSession`-th session waits for `gate` before connecting. A
 * dump opens its leader first, then the lock watch's session (before it takes its locks), then
 * its workers: the first worker is session 3.
 */
class GatedSource implements DumpSessionSource {
  readonly copiesBySession: string[][] = [];
  private opened = 0;

  constructor(
    private readonly source: SourceDatabase,
    private readonly gatedSession: number,
    private readonly gate: () => Promise<void>,
  ) {}

  async connect(): Promise<PoolClient> {
    const index = this.opened++;
    if (index + 1 === this.gatedSession) await this.gate();
    const client = await this.source.connect();
    // Which session ran which COPY, so a test knows the late session really dumped something.
    const copies: string[] = [];
    this.copiesBySession[index] = copies;
    const query = client.query.bind(client) as (...args: unknown[]) => unknown;
    (client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
      const text = typeof args[0] === 'object' && args[0] !== null && 'text' in args[0] ? String((args[0]).text) : String(args[0]);
      if (text.startsWith('COPY')) copies.push(text);
      return query(...args);
    };
    return client;
  }
}

function csv(written: WrittenSnapshot, table: string): string {
  const entry = written.manifest.tables.find((t) => t.name === table)!;
  return readFileSync(join(written.location, entry.file), 'utf8');
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('one instant for the whole dump', () => {
  let db: DumpSource;
  let source: SourceDatabase;

  beforeAll(async () => {
    db = await createDumpSource(
      'consistency',
      `
      CREATE TABLE public.accounts (id int PRIMARY KEY, name text);
      CREATE TABLE public.entries (id int PRIMARY KEY, note text);
      CREATE TABLE public.history (id int PRIMARY KEY, note text);
      INSERT INTO public.accounts SELECT g, 'account ' || g FROM generate_series(1, 2000) g;
      INSERT INTO public.entries SELECT g, 'entry ' || g FROM generate_series(1, 1000) g;
      INSERT INTO public.history SELECT g, 'history ' || g FROM generate_series(1, 500) g;
      `,
    );
    source = new SourceDatabase(db.url, 3);
  });
  afterAll(async () => {
    await source?.end();
    await db?.drop();
  });

  const dumpWith = (sessions: DumpSessionSource, jobs: number, tables: string[] = []) =>
    writeSnapshot({ date: DATE, source: sessions, snapshotDir: db.dir, tables: tables.map((name) => ({ schema: 'public', name })), excludeTables: [], jobs });

  it('a write committed after the first session started is seen by no session, though a late one dumps a table', async () => {
    const marker = 999_001;
    const gated = new GatedSource(source, FIRST_WORKER, async () => {
      // The leader has its snapshot (it exports it before opening workers): commit into every table now.
      await db.query(`INSERT INTO public.accounts VALUES (${marker}, 'late'); INSERT INTO public.entries VALUES (${marker}, 'late'); INSERT INTO public.history VALUES (${marker}, 'late')`);
    });
    const written = await dumpWith(gated, 2);
    // The late session really read tables (else this would prove nothing), and nobody saw the write.
    expect(gated.copiesBySession[FIRST_WORKER - 1].length).toBeGreaterThan(0);
    for (const table of ['public.accounts', 'public.entries', 'public.history']) {
      expect({ table, late: csv(written, table).includes(String(marker)) }).toEqual({ table, late: false });
    }
    expect(written.manifest.tables.map((t) => t.rows)).toEqual([2000, 1000, 500]);
    await db.query(`DELETE FROM public.accounts WHERE id = ${marker}; DELETE FROM public.entries WHERE id = ${marker}; DELETE FROM public.history WHERE id = ${marker}`);
  });

  it('locks the tables before taking the snapshot: a TRUNCATE committing as the dump starts never leaves a table empty beside older data', async () => {
    // One production transaction empties history and records that in entries; a snapshot has both or neither.
    const production = new Client({ connectionString: db.url });
    await production.connect();
    try {
      await production.query('BEGIN');
      await production.query('TRUNCATE public.history');
      await production.query(`INSERT INTO public.entries VALUES (999002, 'history truncated')`);
      const dump = dumpWith(source, 2);
      await until('the dump to wait for the TRUNCATE', async () => {
        const rows = await db.query(`SELECT 1 FROM pg_stat_activity WHERE application_name = 'db-fanout-dumper' AND datname = current_database() AND wait_event_type = 'Lock'`);
        return rows.length > 0;
      });
      await production.query('COMMIT');
      const written = await dump;
      const history = written.manifest.tables.find((t) => t.name === 'public.history')!;
      expect({ historyRows: history.rows, truncationRecorded: csv(written, 'public.entries').includes('history truncated') }).toEqual({ historyRows: 0, truncationRecorded: true });
    } finally {
      await production.end();
    }
  });

  it('takenAt is read inside the snapshot: after every commit it holds, before the dump finished', async () => {
    const [{ committed_before }] = await db.query<{ committed_before: Date }>(
      `INSERT INTO public.entries VALUES (999003, 'just before') RETURNING clock_timestamp() AS committed_before`,
    );
    const { manifest } = await dumpWith(source, 1, ['entries']);
    expect(Date.parse(manifest.takenAt!)).toBeGreaterThanOrEqual(committed_before.getTime());
    expect(Date.parse(manifest.takenAt!)).toBeLessThanOrEqual(Date.parse(manifest.createdAt));
    const [{ after }] = await db.query<{ after: Date }>('SELECT clock_timestamp() AS after');
    expect(Date.parse(manifest.takenAt!)).toBeLessThanOrEqual(after.getTime());
  });

  it('two overlapping dumps: the one that finished last but read first has the earlier takenAt', async () => {
    let releaseWorker!: () => void;
    const workerMayStart = new Promise<void>((resolve) => (releaseWorker = resolve));
    let leaderHasSnapshot!: () => void;
    const snapshotTaken = new Promise<void>((resolve) => (leaderHasSnapshot = resolve));
    const slow = new GatedSource(source, FIRST_WORKER, async () => {
      leaderHasSnapshot();
      await workerMayStart;
    });
    const first = dumpWith(slow, 2);
    await snapshotTaken;
    await db.query(`INSERT INTO public.accounts VALUES (999004, 'newer')`);
    const second = await dumpWith(source, 1);
    releaseWorker();
    const older = await first;
    const read = (written: WrittenSnapshot) => ({ newer: csv(written, 'public.accounts').includes('999004') });
    expect([read(older), read(second)]).toEqual([{ newer: false }, { newer: true }]);
    // createdAt orders them the wrong way round; takenAt (snapshotInstant) the way their data does.
    const at = (m: SnapshotManifest) => ({ created: Date.parse(m.createdAt), taken: Date.parse(m.takenAt!) });
    expect(at(older.manifest).created).toBeGreaterThan(at(second.manifest).created);
    expect(at(older.manifest).taken).toBeLessThan(at(second.manifest).taken);
  });
});
