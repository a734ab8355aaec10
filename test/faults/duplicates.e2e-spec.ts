import { readdirSync } from 'node:fs';
import { consumerBacklog } from '../support/consumers';
import { tableContent } from '../support/databases';
import { DEMO_TABLES } from '../support/fixtures';
import { PipelineHarness, until } from '../support/pipeline';
import { ofSubject, type StoredEvent, streamEvents } from '../support/stream-events';

/** Duplicate triggers (a retried `nats pub`, two schedulers on one tick) cause one dump, not several. */
describe('duplicate triggers', () => {
  const MANUAL_DATE = '2024-03-01';
  let pipeline: PipelineHarness;

  beforeAll(async () => {
    pipeline = await PipelineHarness.create('dup', { environments: ['dev'] });
    await pipeline.startDumper();
    await pipeline.startLoader('dev');
  });
  afterAll(() => pipeline?.cleanup());

  const stored = () => streamEvents(pipeline.namespace.url, pipeline.namespace.stream, pipeline.namespace.prefix);
  const triggersIn = (events: StoredEvent[]) => events.filter((e) => e.subject === 'replication.trigger');
  const snapshotDirsFor = (date: string) => readdirSync(pipeline.snapshotDir).filter((name) => name.startsWith(`prod_snapshot_${date.replace(/-/g, '')}-`));
  const ledger = (where: string, params: unknown[]) =>
    pipeline.targets.dev.query<{ snapshot_id: string; snapshot_date: string }>(
      `SELECT snapshot_id, to_char(snapshot_date, 'YYYY-MM-DD') AS snapshot_date FROM db_fanout.loaded_snapshots WHERE ${where} ORDER BY 1`,
      params,
    );

  /** Nothing pending and nothing unacked for a consumer: the work it was given is finished. */
  async function waitSettled(durable: string, timeoutMs = 30_000): Promise<void> {
    await until(
      `consumer ${durable} to settle`,
      async () => {
        const backlog = await consumerBacklog(pipeline.namespace.stream, durable);
        return backlog.pending === 0 && backlog.unacked === 0;
      },
      timeoutMs,
    );
  }

  it('the same trigger sent ten times with one Nats-Msg-Id gives exactly one dump', async () => {
    const msgId = `manual-${MANUAL_DATE}`;
    // Five before the dump is done, five after it was announced (still inside the duplicate window).
    for (let i = 0; i < 5; i++) await pipeline.trigger(MANUAL_DATE, msgId);
    await pipeline.events.waitFor('the snapshot of the manual date', () => pipeline.readyFor(MANUAL_DATE) !== undefined);
    for (let i = 0; i < 5; i++) await pipeline.trigger(MANUAL_DATE, msgId);
    // A core subscriber (what `nats sub` shows) saw all ten publishes: they really went out.
    await pipeline.events.waitFor('ten trigger publishes', (c) => c.of('replication.trigger').length === 10, 5_000);
    await pipeline.events.waitFor('dev to load the snapshot', () => pipeline.loadedIn('dev').length >= 1);
    await waitSettled('dumper');
    await waitSettled('loader-dev');
    // Room for a (wrong) second dump to show up.
    await new Promise((resolve) => setTimeout(resolve, 2_500));

    const events = await stored();
    const triggers = triggersIn(events);
    expect(triggers).toHaveLength(1);
    expect(triggers[0]).toMatchObject({ msgId, data: { date: MANUAL_DATE } });
    const ready = ofSubject(events, 'snapshot.ready');
    expect(ready).toHaveLength(1);
    expect(ready[0].date).toBe(MANUAL_DATE);
    expect(pipeline.events.of('snapshot.ready')).toHaveLength(1);
    expect(ofSubject(events, 'snapshot.failed')).toEqual([]);

    const dirs = snapshotDirsFor(MANUAL_DATE);
    expect(dirs).toEqual([`prod_snapshot_${ready[0].snapshotId as string}`]);
    expect(readdirSync(pipeline.snapshotDir).filter((name) => name.startsWith('.tmp-'))).toEqual([]);

    // The one snapshot reached dev once.
    const loaded = ofSubject(events, 'snapshot.loaded');
    expect(loaded).toHaveLength(1);
    expect(loaded[0]).toMatchObject({ snapshotId: ready[0].snapshotId, environment: 'dev' });
    expect(await ledger('true', [])).toEqual([{ snapshot_id: ready[0].snapshotId, snapshot_date: MANUAL_DATE }]);
    for (const table of DEMO_TABLES) expect(await tableContent(pipeline.targets.dev, table)).toEqual(await tableContent(pipeline.source, table));
  });

  it('two schedulers running at once cause one dump per tick', async () => {
    const env = { ...pipeline.commonEnv, SCHEDULE: '* * * * * *' };
    const scheduled = () => pipeline.events.of('replication.trigger').filter((t) => t.date !== MANUAL_DATE);
    const [a, b] = await Promise.all([pipeline.fleet.start('scheduler', env, 'scheduler-a'), pipeline.fleet.start('scheduler', env, 'scheduler-b')]);
    await pipeline.events.waitFor('both schedulers to publish several ticks', () => scheduled().length >= 8, 20_000);
    expect(await Promise.all([a.stop(), b.stop()])).toEqual([0, 0]);
    // Let the dumper, then the loader, drain what the ticks stored.
    await waitSettled('dumper');
    await waitSettled('loader-dev');
    await new Promise((resolve) => setTimeout(resolve, 1_500));

    const events = await stored();
    const triggers = triggersIn(events).filter((t) => t.data.date !== MANUAL_DATE);
    const ids = new Set(triggers.map((t) => t.msgId));
    // One stored trigger per tick, each carrying the tick's id.
    expect(triggers.length).toBe(ids.size);
    expect([...ids].every((id) => /^scheduled:\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z$/.test(String(id)))).toBe(true);

    const ready = ofSubject(events, 'snapshot.ready').filter((e) => e.date !== MANUAL_DATE);
    expect(ready.length).toBe(ids.size);
    expect(ready.length).toBeGreaterThanOrEqual(2);
    expect(new Set(ready.map((e) => e.snapshotId)).size).toBe(ready.length);
    expect(ofSubject(events, 'snapshot.failed')).toEqual([]);

    // Both schedulers published every tick they were up for: about twice the stored triggers. The
    // stream kept one of each tick's two; the scheduler whose publish it kept logs the tick
    // triggered, the other that it was stored already.
    const published = scheduled().length;
    const linesOf = (output: string, text: string) => output.split('\n').filter((line) => line.includes(text)).length;
    const triggeredBy = (output: string) => linesOf(output, 'triggered replication for');
    const publishedBy = (output: string) => triggeredBy(output) + linesOf(output, 'was stored already');
    expect(triggeredBy(a.output) + triggeredBy(b.output)).toBe(ids.size);
    expect(publishedBy(a.output) + publishedBy(b.output)).toBe(published);
    expect(publishedBy(a.output)).toBeGreaterThanOrEqual(ids.size - 2);
    expect(publishedBy(b.output)).toBeGreaterThanOrEqual(ids.size - 2);
    expect(published).toBeLessThanOrEqual(2 * ids.size);
    expect(published).toBeGreaterThanOrEqual(2 * ids.size - 3);

    // One snapshot directory per tick, and dev loaded each snapshot once.
    const dates = [...new Set(triggers.map((t) => String(t.data.date)))];
    expect(dates.flatMap((date) => snapshotDirsFor(date)).sort()).toEqual(ready.map((e) => `prod_snapshot_${e.snapshotId as string}`).sort());
    const loaded = ofSubject(events, 'snapshot.loaded').filter((e) => e.snapshotId !== pipeline.readyFor(MANUAL_DATE)?.snapshotId);
    expect(loaded.map((e) => e.snapshotId).sort()).toEqual(ready.map((e) => e.snapshotId).sort());
    const rows = await ledger('snapshot_date <> $1', [MANUAL_DATE]);
    expect(rows.map((r) => r.snapshot_id).sort()).toEqual(ready.map((e) => String(e.snapshotId)).sort());
    for (const table of DEMO_TABLES) expect(await tableContent(pipeline.targets.dev, table)).toEqual(await tableContent(pipeline.source, table));
  });
});
