import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { loadLoaderConfig } from '@app/common/config';
import { type SnapshotLoadedPayload, type SnapshotReadyPayload, SUBJECTS } from '@app/common/contract';
import type { EventPublisher } from '@app/common/messaging';
import { MetricsService } from '@app/common/observability';
import { createDatabase, type TestDatabase } from '../../../test/support/databases';
import { writeSnapshot, type WrittenSnapshot } from '../../dumper/src/snapshot-writer';
import { readyPayloadOf } from '../../../test/support/snapshots';
import { TargetDatabase } from './database/target-database';
import { LoaderService } from './loader.service';

const SQL = `CREATE TABLE public.items (id int PRIMARY KEY, name text NOT NULL); INSERT INTO public.items VALUES (1, 'a'), (2, 'b');`;

/**
 * What follows the commit. snapshot.loaded says when the load committed (`loadedAt`): the run history
 * ends the load there, however late the event gets through (the broker out at commit; a loader killed
 * after COMMIT, whose load a redelivery announces from the ledger, after ACK_WAIT or hours later).
 * Then ANALYZE, which a stop gives up.
 */
describe('LoaderService: after the commit (snapshot.loaded with the commit time, ANALYZE)', () => {
  let source: TestDatabase;
  let target: TestDatabase;
  let database: TargetDatabase;
  let snapshot: WrittenSnapshot;
  const dir = mkdtempSync(join(tmpdir(), 'db-fanout-loaded-at-'));
  const published: { subject: string; body: unknown }[] = [];
  /** Fails every publish of snapshot.loaded while set: the broker out when the load commits. */
  let brokerOut = false;
  /** Runs when snapshot.loaded is published: after the commit, before the ANALYZE. */
  let onLoadedPublished: (() => Promise<void>) | undefined;
  const events = {
    publish: async (subject: string, body: unknown): Promise<void> => {
      if (brokerOut && subject === SUBJECTS.snapshotLoaded) throw new Error('TIMEOUT: the broker is out');
      published.push({ subject, body });
      if (subject === SUBJECTS.snapshotLoaded) await onLoadedPublished?.();
    },
  } as unknown as EventPublisher;
  const payload = (): SnapshotReadyPayload => readyPayloadOf(snapshot);
  const service = () => {
    const config = loadLoaderConfig({ TARGET_DATABASE_URL: target.url, LOADER_ENV: 'spec', SNAPSHOT_DIR: dir, RETRIES: '0' });
    // The NATS connection is for object stores only: this one reads a directory.
    return new LoaderService(config, events, new MetricsService(), database, undefined as never);
  };
  const loadedEvents = () => published.filter((event) => event.subject === SUBJECTS.snapshotLoaded).map((event) => event.body as SnapshotLoadedPayload);
  /** How many columns of public.items have planner statistics (ANALYZE writes them as it commits). */
  const analyzedColumns = async () => (await target.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stats WHERE schemaname = 'public' AND tablename = 'items'"))[0].n;
  const ledger = async () => (await target.query<{ loaded_at: Date; announced: boolean }>('SELECT loaded_at, announced_at IS NOT NULL AS announced FROM db_fanout.loaded_snapshots'))[0];

  beforeAll(async () => {
    source = await createDatabase('loaded_at_prod', SQL);
    snapshot = await writeSnapshot({ date: '2024-01-05', sourceDatabaseUrl: source.url, snapshotDir: dir, tables: [], excludeTables: [] });
  });
  beforeEach(async () => {
    target = await createDatabase('loaded_at_env', SQL.replace(/INSERT.*$/, ''));
    database = new TargetDatabase(target.url);
    published.length = 0;
    brokerOut = false;
    onLoadedPublished = undefined;
  });
  afterEach(async () => {
    await database?.close();
    await target?.drop();
  });
  afterAll(async () => {
    await source?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a load announces when it committed', async () => {
    const before = Date.now();
    const outcome = await service().load(payload());
    const after = Date.now();
    expect(outcome.status).toBe('loaded');
    const [event] = loadedEvents();
    expect(event).toMatchObject({ snapshotId: snapshot.manifest.snapshotId, environment: 'spec', rows: 2, attempts: 1, loadedAt: expect.any(String) });
    const loadedAt = Date.parse(event.loadedAt!);
    expect(new Date(loadedAt).toISOString()).toBe(event.loadedAt);
    // After the ledger row was written (just before COMMIT), within the call.
    const row = await ledger();
    expect(loadedAt).toBeGreaterThanOrEqual(row.loaded_at.getTime());
    expect(loadedAt).toBeGreaterThanOrEqual(before);
    expect(loadedAt).toBeLessThanOrEqual(after);
    expect(row.announced).toBe(true);
    // Then the loaded table's statistics.
    expect(await analyzedColumns()).toBe(2);
  });

  it('a stop gives up the ANALYZE after the load, which waited for a lock, and keeps the load', async () => {
    const stop = new AbortController();
    const dba = new Client({ connectionString: target.url });
    await dba.connect();
    try {
      onLoadedPublished = async () => {
        // What a VACUUM or a CREATE INDEX CONCURRENTLY holds: ANALYZE waits behind it.
        await dba.query('BEGIN');
        await dba.query('LOCK TABLE public.items IN SHARE UPDATE EXCLUSIVE MODE');
        setTimeout(() => stop.abort(), 500);
      };
      const started = Date.now();
      const outcome = await service().load(payload(), stop.signal);
      // Was the session's 60 s lock_timeout.
      expect(Date.now() - started).toBeLessThan(5_000);
      expect(outcome.status).toBe('loaded');
      expect(loadedEvents()).toHaveLength(1);
      expect(await target.query('SELECT id, name FROM public.items ORDER BY id')).toEqual([{ id: 1, name: 'a' }, { id: 2, name: 'b' }]);
      expect(await analyzedColumns()).toBe(0);
      // The ANALYZE was cancelled on the server, not left waiting there.
      expect(await target.query("SELECT pid FROM pg_stat_activity WHERE query LIKE 'ANALYZE%' AND state = 'active' AND datname = current_database()")).toEqual([]);
    } finally {
      await dba.end();
    }
  }, 90_000);

  it('a load announced late from the ledger (the broker out at commit, the message delivered again) says when it committed, not when it is announced', async () => {
    brokerOut = true;
    await expect(service().load(payload(), undefined, { delivery: 1 })).rejects.toThrow('the broker is out');
    expect(loadedEvents()).toEqual([]);
    const row = await ledger();
    expect(row.announced).toBe(false);

    await new Promise((resolve) => setTimeout(resolve, 1_100));
    brokerOut = false;
    // The redelivery finds the load in the ledger and announces it.
    const announcedFrom = Date.now();
    const outcome = await service().load(payload(), undefined, { delivery: 2 });
    expect(outcome.status).toBe('loaded');
    const [event] = loadedEvents();
    expect(event).toMatchObject({ rows: 2, loadedAt: row.loaded_at.toISOString() });
    expect(Date.parse(event.loadedAt!)).toBeLessThan(announcedFrom - 1_000);
    // The same from the last delivery's announceCommitted.
    published.length = 0;
    await target.query('UPDATE db_fanout.loaded_snapshots SET announced_at = NULL');
    await service().announceCommitted(payload(), { delivery: 3 });
    expect(loadedEvents()).toEqual([expect.objectContaining({ loadedAt: row.loaded_at.toISOString() })]);
  });
});
