import { cpSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { TargetDatabase } from '../apps/loader/src/database/target-database';
import { LEDGER_TABLE } from '../apps/loader/src/ledger';
import { consumerBacklog } from './support/consumers';
import { plainPublish } from './support/nats';
import { PipelineHarness, until } from './support/pipeline';
import { streamEvents } from './support/stream-events';

/**
 * Every load attempt ends in a terminal event (snapshot.loaded, snapshot.load.skipped or
 * snapshot.load.failed), snapshot.load.started only when there is work, every event with a message
 * id; a loader that mounts the snapshot volume elsewhere still loads; failures carry a code and no
 * row values.
 */
describe('load outcomes', () => {
  let pipeline: PipelineHarness;
  let elsewhere: string;
  let older: Record<string, unknown>;
  let newer: Record<string, unknown>;

  beforeAll(async () => {
    pipeline = await PipelineHarness.create('outcomes', {
      environments: ['dev', 'qa', 'uat', 'late'],
      // uat's customers.note only takes numbers: production's notes fail the COPY with a data exception
      // that quotes the offending value.
      targetSql: { uat: 'UPDATE customers SET note = NULL; ALTER TABLE customers ALTER COLUMN note TYPE int USING NULL;' },
    });
    elsewhere = mkdtempSync(join(tmpdir(), 'db-fanout-outcomes-mount-'));
    await pipeline.startDumper();
    await pipeline.trigger('2024-06-01');
    await pipeline.events.waitFor('the older snapshot', () => pipeline.readyFor('2024-06-01') !== undefined);
    await pipeline.trigger('2024-06-02');
    await pipeline.events.waitFor('the newer snapshot', () => pipeline.readyFor('2024-06-02') !== undefined);
    older = pipeline.readyFor('2024-06-01')!;
    newer = pipeline.readyFor('2024-06-02')!;
  }, 120_000);
  afterAll(async () => {
    await pipeline?.cleanup();
    rmSync(elsewhere, { recursive: true, force: true });
  });

  const of = (subject: string, environment: string) => pipeline.events.of(subject).filter((e) => e.environment === environment);
  const republish = (payload: Record<string, unknown>, msgId: string) =>
    plainPublish(`${pipeline.namespace.prefix}snapshot.ready`, JSON.stringify(payload), msgId, pipeline.namespace.url);
  async function settled(durable: string): Promise<void> {
    await until(`consumer ${durable} to settle`, async () => {
      const backlog = await consumerBacklog(pipeline.namespace.stream, durable);
      return backlog.pending === 0 && backlog.unacked === 0;
    });
  }

  it('loads, then ends a redelivery with snapshot.load.skipped (already-loaded) and an older snapshot with (superseded), without a start event', async () => {
    // A new environment starts from the latest announcement: the newer snapshot.
    await pipeline.startLoader('dev');
    await pipeline.events.waitFor('dev to load the newer snapshot', () => pipeline.loadedIn('dev').length === 1);
    expect(pipeline.loadedIn('dev')[0]).toMatchObject({ snapshotId: newer.snapshotId });
    expect(of('snapshot.load.started', 'dev')).toEqual([expect.objectContaining({ snapshotId: newer.snapshotId, attempt: 1 })]);

    await republish(older, 'outcomes-older-again');
    await pipeline.events.waitFor('the older snapshot to be skipped', () => of('snapshot.load.skipped', 'dev').length === 1);
    expect(of('snapshot.load.skipped', 'dev')[0]).toEqual({ snapshotId: older.snapshotId, environment: 'dev', reason: 'superseded', by: newer.snapshotId });

    await republish(newer, 'outcomes-newer-again');
    await pipeline.events.waitFor('the redelivery to be skipped', () => of('snapshot.load.skipped', 'dev').length === 2);
    expect(of('snapshot.load.skipped', 'dev')[1]).toEqual({ snapshotId: newer.snapshotId, environment: 'dev', reason: 'already-loaded' });
    await settled('loader-dev');

    // Skipped attempts never show as started, and nothing was loaded twice.
    expect(of('snapshot.load.started', 'dev')).toHaveLength(1);
    expect(pipeline.loadedIn('dev')).toHaveLength(1);
    // Every event the loader stored carries a message id.
    const stored = (await streamEvents(pipeline.namespace.url, pipeline.namespace.stream, pipeline.namespace.prefix)).filter(
      (e) => e.subject.startsWith('snapshot.load') && e.data.environment === 'dev',
    );
    expect(stored.length).toBeGreaterThanOrEqual(4);
    expect(stored.filter((e) => !e.msgId)).toEqual([]);
  });

  it('a snapshot not visible under SNAPSHOT_DIR is a failed load (after a bounded wait), and a volume mounted elsewhere loads', async () => {
    // qa mounts the snapshot volume at another path, where the newer snapshot is not there yet.
    await pipeline.startLoader('qa', { SNAPSHOT_DIR: elsewhere });
    await pipeline.events.waitFor('qa to report the missing snapshot', () => of('snapshot.load.failed', 'qa').length === 1, 40_000);
    const [failed] = of('snapshot.load.failed', 'qa');
    expect(failed).toMatchObject({ snapshotId: newer.snapshotId, code: 'snapshot-not-found', attempts: 1 });
    expect(failed.error).toContain(`snapshot directory ${basename(String(newer.location))} not found in SNAPSHOT_DIR (${elsewhere})`);
    await settled('loader-qa');

    // The volume shows up at qa's path (its own mount point, not the dumper's): the snapshot loads.
    cpSync(String(newer.location), join(elsewhere, basename(String(newer.location))), { recursive: true });
    await republish(newer, 'outcomes-newer-for-qa');
    await pipeline.events.waitFor('qa to load', () => pipeline.loadedIn('qa').length === 1, 40_000);
    expect(pipeline.loadedIn('qa')[0]).toMatchObject({ snapshotId: newer.snapshotId });
  }, 120_000);

  it('a failure event carries the SQLSTATE and withholds the row value PostgreSQL quoted', async () => {
    await pipeline.startLoader('uat');
    await pipeline.events.waitFor('uat to fail', () => of('snapshot.load.failed', 'uat').length === 1);
    const [failed] = of('snapshot.load.failed', 'uat');
    expect(failed).toMatchObject({ snapshotId: newer.snapshotId, code: '22P02', attempts: 1 });
    expect(failed.error).toMatch(/^invalid input syntax for type integer: \(value withheld; ERROR_DETAIL=true shows it\)/);
    const notes = await pipeline.source.query<{ note: string }>("SELECT note FROM customers WHERE note <> ''");
    for (const { note } of notes) expect(String(failed.error)).not.toContain(note);
  });

  it('a snapshot in another store than the loader reads is a failed load naming both, at once, not a message dropped in silence', async () => {
    const id = '20240603-0badc0de';
    const elsewhereInNats = { ...newer, snapshotId: id, date: '2024-06-03', location: `nats://db-fanout-snapshots/prod_snapshot_${id}` };
    const asked = Date.now();
    await republish(elsewhereInNats, 'outcomes-other-store');
    await pipeline.events.waitFor('dev to report the store mismatch', () => of('snapshot.load.failed', 'dev').some((e) => e.snapshotId === id), 20_000);
    expect(Date.now() - asked).toBeLessThan(8_000); // no waiting for a directory that cannot appear
    expect(of('snapshot.load.failed', 'dev').find((e) => e.snapshotId === id)).toEqual({
      snapshotId: id,
      environment: 'dev',
      code: 'store-mismatch',
      attempts: 1,
      error: `snapshot nats://db-fanout-snapshots/prod_snapshot_${id} is in the nats store (bucket db-fanout-snapshots), and this loader reads the fs store (SNAPSHOT_DIR): set SNAPSHOT_STORE and SNAPSHOT_BUCKET as the dumper's`,
    });
    await settled('loader-dev');
  });

  it('settles a redelivery of what the environment holds from its ledger, even while the snapshot cannot be read', async () => {
    const skippedBefore = of('snapshot.load.skipped', 'dev').length;
    const failedBefore = of('snapshot.load.failed', 'dev').length;
    const away = `${String(newer.location)}.away`;
    renameSync(String(newer.location), away); // the volume unreachable for a moment
    try {
      await republish(newer, 'outcomes-newer-while-away');
      await pipeline.events.waitFor('dev to skip the redelivery', () => of('snapshot.load.skipped', 'dev').length === skippedBefore + 1, 20_000);
      expect(of('snapshot.load.skipped', 'dev').at(-1)).toEqual({ snapshotId: newer.snapshotId, environment: 'dev', reason: 'already-loaded' });
      await settled('loader-dev');
      expect(of('snapshot.load.failed', 'dev')).toHaveLength(failedBefore);
    } finally {
      renameSync(away, String(newer.location));
    }
  }, 60_000);

  it('announces a load its loader committed but died before announcing, and runs the ANALYZE that loader never reached', async () => {
    const late = pipeline.targets.late;
    // What the killed process left: the load committed (its ledger row), no announcement, no ANALYZE.
    const database = new TargetDatabase(late.url);
    await database.ensureLedger();
    await database.close();
    await late.query(
      `INSERT INTO ${LEDGER_TABLE} (snapshot_id, snapshot_date, environment, rows, duration_ms, attempts, snapshot_taken_at) VALUES ($1, $2, 'late', 7, 100, 1, $3)`,
      [newer.snapshotId, newer.date, newer.takenAt],
    );
    const tables = (newer.tables as { name: string }[]).map((t) => t.name);
    const analyzed = async () =>
      (await late.query<{ n: string }>('SELECT count(*)::text AS n FROM pg_stat_user_tables WHERE relid = ANY($1::regclass[]) AND last_analyze IS NOT NULL', [tables]))[0].n;
    expect(await analyzed()).toBe('0');

    await pipeline.startLoader('late');
    await pipeline.events.waitFor('late to announce', () => pipeline.loadedIn('late').length === 1);
    expect(pipeline.loadedIn('late')[0]).toMatchObject({ snapshotId: newer.snapshotId, rows: 7, attempts: 1 });
    expect(of('snapshot.load.started', 'late')).toEqual([]);
    await until('every loaded table to be analyzed', async () => (await analyzed()) === String(tables.length), 15_000);
  });
});
