import { formatRunsTable } from '../../../cli/src/runs-table';
import { applyEvent, dateOfSnapshot, isFinished, newRun, type RunRecord, runDateOf, triggerSeqOf } from './run-record';

type Event = [string, Record<string, unknown>];

/** Folds events in the order given; the broker stores event i at second i. */
const fold = (events: Event[], run: RunRecord = newRun('2024-01-05')): RunRecord =>
  events.reduce((current, [subject, body], i) => applyEvent(current, subject, body, at(i)), run);
const at = (i: number) => new Date(Date.UTC(2024, 0, 5, 1, 0, i)).toISOString();

function* permutations<T>(items: T[]): Generator<T[]> {
  if (items.length <= 1) {
    yield items;
    return;
  }
  for (let i = 0; i < items.length; i++) {
    if (items.indexOf(items[i]) !== i) continue; // equal items: one order is enough
    for (const rest of permutations([...items.slice(0, i), ...items.slice(i + 1)])) yield [items[i], ...rest];
  }
}

const S1 = '20240105-aaaaaaaa';
const S2 = '20240105-bbbbbbbb';
const load = (subject: string, extra: Record<string, unknown>, snapshotId = S1): Event => [subject, { snapshotId, environment: 'dev', ...extra }];
const started = (attempt: number, snapshotId = S1) => load('snapshot.load.started', { attempt, startedAt: `2024-01-05T00:10:0${attempt}.000Z` }, snapshotId);
const retrying = (attempt: number) => load('snapshot.load.retrying', { attempt, error: `attempt ${attempt} failed`, retryInMs: 500 });
const loaded = (attempts: number, snapshotId = S1) => load('snapshot.loaded', { rows: 5, durationMs: 10, attempts }, snapshotId);
const loadFailed = (attempts: number) => load('snapshot.load.failed', { error: 'column x missing', attempts });
const skipped = (reason: string, by?: string) => load('snapshot.load.skipped', { reason, ...(by ? { by } : {}) });
const ready = (snapshotId: string, createdAt: string): Event => ['snapshot.ready', { snapshotId, date: '2024-01-05', createdAt, tables: [{ rows: 3, bytes: 30 }] }];

/**
 * Folds `events` in every order and returns each distinct result of `pick` with the first order that
 * gave it (one entry: every order ends the same).
 */
function outcomesOfEveryOrder(events: Event[], pick: (run: RunRecord) => unknown): { outcome: unknown; order: string[] }[] {
  const outcomes = new Map<string, { outcome: unknown; order: string[] }>();
  for (const order of permutations(events)) {
    // As the ledger stores it (JSON: no undefined fields), keys sorted so that equal outcomes compare equal.
    const outcome = JSON.parse(JSON.stringify(pick(fold(order)) ?? null)) as unknown;
    const key = JSON.stringify(outcome, (_, value: unknown) =>
      value && typeof value === 'object' && !Array.isArray(value) ? Object.fromEntries(Object.entries(value).sort(([a], [b]) => a.localeCompare(b))) : value,
    );
    if (!outcomes.has(key)) outcomes.set(key, { outcome, order: order.map(([subject, body]) => `${subject} ${JSON.stringify(body)}`) });
  }
  return [...outcomes.values()];
}

/** Asserts that `events` folded in every order end with `expected` (what `pick` takes of the run). */
function expectEveryOrder(events: Event[], pick: (run: RunRecord) => unknown, expected: unknown): void {
  const outcomes = outcomesOfEveryOrder(events, pick);
  expect(outcomes.map(({ outcome }) => outcome)).toEqual([expected]);
}

describe('run ledger fold', () => {
  it('follows a run through a dump and a load to success', () => {
    const run = fold([
      ['replication.trigger', { date: '2024-01-05' }],
      ['snapshot.dump.started', { date: '2024-01-05', attempt: 1, startedAt: '2024-01-05T00:00:01.000Z' }],
      ['snapshot.ready', { snapshotId: S1, date: '2024-01-05', location: `nats://db-fanout-snapshots/prod_snapshot_${S1}`, createdAt: '2024-01-05T00:00:02.000Z', takenAt: '2024-01-05T00:00:01.500Z', tables: [{ rows: 3, bytes: 30 }, { rows: 2, bytes: 20 }] }],
      started(1),
      loaded(1),
    ]);
    expect(run.triggeredAt).toBe(at(0));
    expect(run.dump).toMatchObject({ state: 'success', attempts: 1, rows: 5, bytes: 50, snapshotId: S1, startedAt: '2024-01-05T00:00:01.000Z', endedAt: '2024-01-05T00:00:02.000Z', takenAt: '2024-01-05T00:00:01.500Z', location: `nats://db-fanout-snapshots/prod_snapshot_${S1}` });
    expect(run.loads.dev).toMatchObject({ state: 'success', attempts: 1, rows: 5, startedAt: '2024-01-05T00:10:01.000Z', endedAt: at(4) });
  });

  it('shows a retry as up_for_retry, then running with the next attempt, then success', () => {
    const events: Event[] = [started(1), retrying(1)];
    expect(fold(events).loads.dev).toMatchObject({ state: 'up_for_retry', attempts: 1, error: 'attempt 1 failed' });
    events.push(started(2));
    expect(fold(events).loads.dev).toMatchObject({ state: 'running', attempts: 2, startedAt: '2024-01-05T00:10:01.000Z' });
    expect(fold(events).loads.dev.error).toBeUndefined();
    events.push(loaded(2));
    expect(fold(events).loads.dev).toMatchObject({ state: 'success', attempts: 2 });
  });

  it('records failures with their error and attempts, for the dump and for a load', () => {
    const run = fold([
      loadFailed(1),
      ['snapshot.dump.retrying', { date: '2024-01-05', attempt: 2, error: 'terminated' }],
      ['snapshot.failed', { date: '2024-01-05', error: 'terminated', attempts: 3 }],
    ]);
    expect(run.loads.dev).toMatchObject({ state: 'failed', attempts: 1, error: 'column x missing' });
    expect(run.dump).toMatchObject({ state: 'failed', attempts: 3, error: 'terminated' });
  });

  it('never lets a late or repeated start undo a finished load (the issue: success back to running)', () => {
    for (const outcome of [loaded(1), loadFailed(1), skipped('already-loaded'), skipped('superseded', '20240106-cccccccc')]) {
      const finished = fold([started(1), outcome]);
      expect(isFinished(finished.loads.dev.state)).toBe(true);
      expect(fold([started(1), outcome, started(1)]).loads.dev).toEqual(finished.loads.dev);
      expect(fold([started(1), outcome, started(1), retrying(1), started(2)]).loads.dev).toEqual(finished.loads.dev);
    }
  });

  it('ends a load that retried and succeeded as success on attempt 2 in every order, each event sent twice', () => {
    const events = [started(1), retrying(1), started(2), loaded(2)];
    // endedAt is when the first snapshot.loaded was stored, which depends on the order: left out here.
    const expected = { state: 'success', attempts: 2, rows: 5, startedAt: '2024-01-05T00:10:01.000Z', snapshotId: S1 };
    expectEveryOrder([...events, ...events], (run) => ({ ...run.loads.dev, endedAt: undefined }), expected);
    expect([...permutations([...events, ...events])]).toHaveLength(2520); // 8! / 2^4 distinct orders
    // The outcome keeps the time of the first report of it.
    expect(fold([started(1), loaded(1), loaded(1)]).loads.dev.endedAt).toBe(at(1));
  });

  it('ends a load that failed on its last attempt as failed in every order, each event sent twice', () => {
    const events = [started(1), retrying(1), started(2), loadFailed(2)];
    expectEveryOrder([...events, ...events], (run) => ({ ...run.loads.dev, endedAt: undefined }), { state: 'failed', attempts: 2, error: 'column x missing', snapshotId: S1, startedAt: '2024-01-05T00:10:01.000Z' });
  });

  it('shows the furthest point reached while a load is under way, whatever the order', () => {
    const stateOf = (run: RunRecord) => [run.loads.dev.state, run.loads.dev.attempts];
    expectEveryOrder([started(1), retrying(1), started(2)], stateOf, ['running', 2]);
    expectEveryOrder([started(1), retrying(1), started(1), retrying(1)], stateOf, ['up_for_retry', 1]);
  });

  it('folds snapshot.load.skipped: already-loaded is a success, superseded a finished state naming the newer snapshot', () => {
    const outcome = (run: RunRecord) => ({ state: run.loads.dev.state, attempts: run.loads.dev.attempts, supersededBy: run.loads.dev.supersededBy });
    expectEveryOrder([started(1), started(1), skipped('already-loaded'), skipped('already-loaded')], outcome, { state: 'success', attempts: 1 });
    expectEveryOrder([started(1), skipped('superseded', '20240106-cccccccc'), skipped('superseded', '20240106-cccccccc')], outcome, {
      state: 'superseded',
      attempts: 1,
      supersededBy: '20240106-cccccccc',
    });
    // A snapshot the environment did load stays a success when a redelivery later finds it superseded.
    expectEveryOrder([started(1), loaded(1), skipped('superseded', '20240106-cccccccc')], outcome, { state: 'success', attempts: 1 });
    // A reload that loads a snapshot whose load had failed turns it into a success.
    expect(fold([started(1), loadFailed(1), started(1), loaded(1)]).loads.dev).toMatchObject({ state: 'success', error: undefined });
  });

  describe('a message delivered again after its worker died', () => {
    const startedAgain = (attempt: number, delivery: number) => load('snapshot.load.started', { attempt, delivery, startedAt: `2024-01-05T00:20:0${attempt}.000Z` });
    const retryingAgain = (attempt: number, delivery: number) => load('snapshot.load.retrying', { attempt, delivery, error: `attempt ${attempt} failed again`, retryInMs: 500 });

    it('shows the redelivered try as running, its attempts counting on from the earlier delivery, in every order', () => {
      const stateOf = (run: RunRecord) => [run.loads.dev.state, run.loads.dev.attempts];
      // Delivery 1 failed its attempt 1 and was waiting to retry when the loader died; delivery 2 starts at attempt 1.
      expect(fold([started(1), retrying(1), startedAgain(1, 2)]).loads.dev).toMatchObject({ state: 'running', attempts: 2, delivery: 2, startedAt: '2024-01-05T00:10:01.000Z' });
      // A delivery's events in any order, each twice; the next delivery's come after them (published
      // by the worker that started after the first one died).
      for (const order of permutations([started(1), retrying(1), started(1), retrying(1)])) {
        expect(stateOf(fold([...order, startedAgain(1, 2), startedAgain(1, 2)]))).toEqual(['running', 2]);
      }
      expect(fold([started(1), retrying(1), startedAgain(1, 2), retryingAgain(1, 2), startedAgain(2, 2)]).loads.dev).toMatchObject({ state: 'running', attempts: 3 });
      // Its outcome reports the delivery's own attempts: counted on top of the earlier delivery's.
      expect(fold([started(1), retrying(1), startedAgain(1, 2), loaded(1)]).loads.dev).toMatchObject({ state: 'success', attempts: 2 });
      expect(fold([started(1), startedAgain(1, 2), retryingAgain(1, 2), startedAgain(2, 2), loadFailed(2)]).loads.dev).toMatchObject({ state: 'failed', attempts: 3 });
    });

    it('counts each delivery once when the last one fails (its report gives its own attempt: 1)', () => {
      const deliveries = Array.from({ length: 10 }, (_, i) => startedAgain(1, i + 1));
      expect(fold([...deliveries, loadFailed(1)]).loads.dev).toMatchObject({ state: 'failed', attempts: 10 });
    });

    it('does the same for a dump', () => {
      const dump = (subject: string, attempt: number, delivery?: number): Event => [subject, { date: '2024-01-05', attempt, ...(delivery ? { delivery } : {}), startedAt: '2024-01-05T00:00:01.000Z', error: 'x' }];
      const run = fold([dump('snapshot.dump.started', 1), dump('snapshot.dump.retrying', 1), dump('snapshot.dump.started', 1, 2)]);
      expect(run.dump).toMatchObject({ state: 'running', attempts: 2, delivery: 2 });
    });
  });

  describe('a db-fanout reload', () => {
    const asReload = ([subject, body]: Event, reloadSequence: number): Event => [subject, { ...body, reloadSequence }];

    it('is a new try of the step: a reload that fails shows failed, with its own times, though the first load succeeded', () => {
      const first = [started(1), loaded(1)];
      expect(fold(first).loads.dev.state).toBe('success');
      const reloadStart = asReload(load('snapshot.load.started', { attempt: 1, startedAt: '2024-01-06T09:00:00.000Z' }), 42);
      expect(fold([...first, reloadStart]).loads.dev).toMatchObject({ state: 'running', attempts: 1, startedAt: '2024-01-06T09:00:00.000Z', reloadSequence: 42 });
      const failedReload = fold([...first, reloadStart, asReload(loadFailed(1), 42)]);
      expect(failedReload.loads.dev).toMatchObject({ state: 'failed', attempts: 1, error: 'column x missing', reloadSequence: 42, startedAt: '2024-01-06T09:00:00.000Z' });
      expect(failedReload.loads.dev.rows).toBeUndefined();
      // The first load's late or repeated events no longer change it; a later reload does.
      expect(fold([...first, reloadStart, asReload(loadFailed(1), 42), loaded(1), skipped('already-loaded')]).loads.dev).toEqual(failedReload.loads.dev);
      expect(fold([...first, reloadStart, asReload(loadFailed(1), 42), asReload(started(1), 43), asReload(loaded(1), 43)]).loads.dev).toMatchObject({ state: 'success', reloadSequence: 43, error: undefined });
    });

    it("of an earlier run's snapshot of the date (the re-run's dump failed) shows on the row, and its old request's late events do not", () => {
      const rerunFailed = fold([
        ready(S1, '2024-01-05T00:00:02.000Z'),
        started(1),
        loaded(1),
        ['replication.trigger', { date: '2024-01-05' }],
        ['snapshot.failed', { date: '2024-01-05', error: 'boom', attempts: 3 }],
      ]);
      expect(rerunFailed.loads).toEqual({});
      const reloaded = fold([asReload(load('snapshot.load.started', { attempt: 1, startedAt: '2024-01-06T09:00:00.000Z' }), 57), asReload(loadFailed(1), 57)], rerunFailed);
      expect(reloaded.loads.dev).toMatchObject({ state: 'failed', snapshotId: S1, reloadSequence: 57, startedAt: '2024-01-06T09:00:00.000Z' });
      // Reload #58 of another snapshot, then a late event of #57: the row keeps #58.
      const later = fold([asReload(started(1, S2), 58), asReload(loaded(1), 57)], reloaded);
      expect(later.loads.dev).toMatchObject({ state: 'running', snapshotId: S2, reloadSequence: 58 });
      // The earlier snapshot's own (not reload) late events still stay out.
      expect(fold([loaded(1)], rerunFailed).loads).toEqual({});
    });

    it("of an earlier run's snapshot while the re-run dumps gives way to the re-run's own load", () => {
      const rerunning = fold([ready(S1, '2024-01-05T00:00:02.000Z'), started(1), loaded(1), ['replication.trigger', { date: '2024-01-05' }], ['snapshot.dump.started', { date: '2024-01-05', attempt: 1, startedAt: '2024-01-06T08:00:00.000Z' }]]);
      const reloadedOld = fold([asReload(started(1), 57), asReload(loaded(1), 57)], rerunning);
      expect(reloadedOld.loads.dev).toMatchObject({ state: 'success', snapshotId: S1, reloadSequence: 57 });
      const own = fold([ready(S2, '2024-01-06T09:00:00.000Z'), started(1, S2), loaded(1, S2)], reloadedOld);
      expect(own.dump.snapshotId).toBe(S2);
      expect(own.loads.dev).toMatchObject({ state: 'success', snapshotId: S2 });
      expect(own.loads.dev.reloadSequence).toBeUndefined();
    });

    it('that loads a snapshot whose load had failed shows success with its own start, not the failed load\'s', () => {
      const reloadStart = asReload(load('snapshot.load.started', { attempt: 1, startedAt: '2024-01-06T09:00:00.000Z' }), 42);
      expect(fold([started(1), retrying(1), started(2), loadFailed(2), reloadStart, asReload(loaded(1), 42)]).loads.dev).toMatchObject({
        state: 'success',
        attempts: 1,
        startedAt: '2024-01-06T09:00:00.000Z',
        error: undefined,
      });
    });
  });

  describe('schema drift (SCHEMA_DRIFT=common-columns)', () => {
    const drift = { skippedTables: ['public.audit'], leftOutColumns: ['public.products."attrs"'], defaultedColumns: ['public.customers."region"'] };
    const loadedWithDrift = (body: Record<string, unknown> = drift) => load('snapshot.loaded', { rows: 5, durationMs: 10, attempts: 1, drift: body });

    it("records what the environment's load left out on its step, whatever the order, each event sent twice", () => {
      const events = [started(1), loadedWithDrift()];
      expectEveryOrder([...events, ...events], (run) => ({ ...run.loads.dev, endedAt: undefined }), {
        state: 'success',
        attempts: 1,
        rows: 5,
        drift,
        startedAt: '2024-01-05T00:10:01.000Z',
        snapshotId: S1,
      });
      // A redelivery that finds the snapshot already loaded does not take the drift away, nor does it hide it when it comes first.
      expectEveryOrder([started(1), loadedWithDrift(), skipped('already-loaded')], (run) => [run.loads.dev.state, run.loads.dev.rows, run.loads.dev.drift], ['success', 5, drift]);
    });

    it('has no drift when the schema matched, and the load that succeeds after a failure brings its own', () => {
      expect(JSON.parse(JSON.stringify(fold([started(1), loaded(1)]).loads.dev))).not.toHaveProperty('drift');
      expect(fold([started(1), loadFailed(1), started(1), loadedWithDrift()]).loads.dev).toMatchObject({ state: 'success', drift, error: undefined });
      // The first report of the success is the load's: a later one (a reload) changes neither its time nor its drift.
      expect(fold([started(1), loadedWithDrift(), loaded(1)]).loads.dev).toMatchObject({ drift, endedAt: at(1) });
      expect(fold([started(1), loaded(1), loadedWithDrift()]).loads.dev.drift).toBeUndefined();
    });

    it('keeps only lists of names from a drift (anyone on the stream can publish one), and none when all are empty', () => {
      const odd = { skippedTables: 'public.audit', leftOutColumns: ['public.products."attrs"', 7, { html: '<b>' }, null], defaultedColumns: undefined, extra: ['x'] };
      expect(fold([loadedWithDrift(odd)]).loads.dev.drift).toEqual({ skippedTables: [], leftOutColumns: ['public.products."attrs"'], defaultedColumns: [] });
      // The sequences it left unset (a newer loader's), only where it names any.
      expect(fold([loadedWithDrift({ ...drift, unsetSequences: ['public.audit_id_seq', 3] })]).loads.dev.drift).toEqual({ ...drift, unsetSequences: ['public.audit_id_seq'] });
      expect(fold([loadedWithDrift({ ...drift, unsetSequences: [] })]).loads.dev.drift).toEqual(drift);
      for (const none of [{ skippedTables: [], leftOutColumns: [], defaultedColumns: [] }, 'drift', null, [], { leftOutColumns: [1, 2] }, { unsetSequences: [4] }]) {
        expect(JSON.parse(JSON.stringify(fold([loadedWithDrift(none as Record<string, unknown>)]).loads.dev))).not.toHaveProperty('drift');
      }
    });
  });

  it('ends a dump that retried and succeeded as success in every order, each event sent twice', () => {
    const dumpStarted = (attempt: number): Event => ['snapshot.dump.started', { date: '2024-01-05', attempt, startedAt: `2024-01-05T00:00:0${attempt}.000Z` }];
    const events: Event[] = [dumpStarted(1), ['snapshot.dump.retrying', { date: '2024-01-05', attempt: 1, error: 'terminated' }], dumpStarted(2), ready(S1, '2024-01-05T00:00:09.000Z')];
    expectEveryOrder([...events, ...events], (run) => run.dump, {
      state: 'success',
      attempts: 2,
      startedAt: '2024-01-05T00:00:01.000Z',
      endedAt: '2024-01-05T00:00:09.000Z',
      snapshotId: S1,
      takenAt: '2024-01-05T00:00:09.000Z',
      rows: 3,
      bytes: 30,
    });
    const failed: Event[] = [dumpStarted(1), ['snapshot.dump.retrying', { date: '2024-01-05', attempt: 1, error: 'terminated' }], dumpStarted(2), ['snapshot.failed', { date: '2024-01-05', error: 'terminated', attempts: 2 }]];
    expectEveryOrder([...failed, ...failed], (run) => ({ ...run.dump, endedAt: undefined }), { state: 'failed', attempts: 2, error: 'terminated', startedAt: '2024-01-05T00:00:01.000Z' });
  });

  describe('a re-run of a date', () => {
    const firstRun: Event[] = [
      ['replication.trigger', { date: '2024-01-05' }],
      ['snapshot.dump.started', { date: '2024-01-05', attempt: 1, startedAt: '2024-01-05T00:00:01.000Z' }],
      ready(S1, '2024-01-05T00:00:02.000Z'),
      started(1),
      loaded(1),
    ];
    const secondRun: Event[] = [
      ['replication.trigger', { date: '2024-01-05' }],
      ['snapshot.dump.started', { date: '2024-01-05', attempt: 1, startedAt: '2024-01-05T09:00:01.000Z' }],
      ready(S2, '2024-01-05T09:00:02.000Z'),
    ];

    it('shows its own times and snapshot, not a mix with the earlier run', () => {
      const rerun = fold([...firstRun, secondRun[0]]);
      expect(rerun).toEqual({ date: '2024-01-05', triggeredAt: at(5), dump: { state: 'queued', attempts: 0 }, loads: {}, earlierSnapshots: [S1] });
      const run = fold([...firstRun, ...secondRun]);
      expect(run.dump).toMatchObject({ state: 'success', snapshotId: S2, startedAt: '2024-01-05T09:00:01.000Z', endedAt: '2024-01-05T09:00:02.000Z' });
      expect(run.loads).toEqual({});
      const loadedAgain = fold([...firstRun, ...secondRun, load('snapshot.load.started', { attempt: 1, startedAt: '2024-01-05T09:00:03.000Z' }, S2), loaded(1, S2)]);
      expect(loadedAgain.loads.dev).toMatchObject({ state: 'success', snapshotId: S2, startedAt: '2024-01-05T09:00:03.000Z', endedAt: at(9) });
    });

    it('shows its own trigger time when its trigger came while the earlier run was still dumping', () => {
      const atTime = (iso: string) => (run: RunRecord, [subject, body]: Event) => applyEvent(run, subject, body, iso);
      let run = newRun('2024-01-05');
      run = atTime('2024-01-05T00:00:00.000Z')(run, ['replication.trigger', { date: '2024-01-05' }]);
      run = atTime('2024-01-05T00:00:01.000Z')(run, ['snapshot.dump.started', { date: '2024-01-05', attempt: 1, startedAt: '2024-01-05T00:00:01.000Z' }]);
      run = atTime('2024-01-05T00:05:00.000Z')(run, ['replication.trigger', { date: '2024-01-05' }]); // a second trigger, by hand
      expect(run.triggeredAt).toBe('2024-01-05T00:00:00.000Z');
      run = atTime('2024-01-05T00:10:00.000Z')(run, ready(S1, '2024-01-05T00:10:00.000Z'));
      run = atTime('2024-01-05T00:10:01.000Z')(run, ['snapshot.dump.started', { date: '2024-01-05', attempt: 1, startedAt: '2024-01-05T00:10:01.000Z' }]);
      expect(run).toMatchObject({ triggeredAt: '2024-01-05T00:05:00.000Z', dump: { state: 'running', startedAt: '2024-01-05T00:10:01.000Z' }, earlierSnapshots: [S1] });
      expect(run.nextTriggerAt).toBeUndefined();
    });

    it('ignores the earlier snapshot\'s late events', () => {
      const run = fold([...firstRun, ...secondRun, started(1, S2), started(1), loaded(1), ready(S1, '2024-01-05T00:00:02.000Z')]);
      expect(run.dump.snapshotId).toBe(S2);
      expect(run.loads.dev).toMatchObject({ state: 'running', snapshotId: S2 });
    });

    it('ignores the earlier dump\'s late start (it began before the re-run was triggered)', () => {
      // The re-run is triggered at 09:00 (the broker's time); a start from 00:00 is the first run's.
      const retriggered = applyEvent(fold(firstRun), 'replication.trigger', { date: '2024-01-05' }, '2024-01-05T09:00:00.000Z');
      const run = fold([firstRun[1], secondRun[1]], retriggered);
      expect(run.dump).toMatchObject({ state: 'running', startedAt: '2024-01-05T09:00:01.000Z' });
      expect(fold([firstRun[1]], retriggered).dump).toEqual({ state: 'queued', attempts: 0 });
    });

    it('is recognised by its newer snapshot when its trigger and start were not seen', () => {
      const run = fold([...firstRun, ready(S2, '2024-01-05T09:00:02.000Z'), loaded(1)]);
      expect(run.dump).toMatchObject({ state: 'success', snapshotId: S2, endedAt: '2024-01-05T09:00:02.000Z' });
      expect(run.loads).toEqual({});
      // The older snapshot announced after the newer one does not take the row back.
      expect(fold([ready(S2, '2024-01-05T09:00:02.000Z'), ready(S1, '2024-01-05T00:00:02.000Z'), loaded(1)]).dump.snapshotId).toBe(S2);
      expect(fold([ready(S2, '2024-01-05T09:00:02.000Z'), ready(S1, '2024-01-05T00:00:02.000Z'), loaded(1)]).loads).toEqual({});
    });

    it('starts with the dump of a redelivered trigger (no new trigger message)', () => {
      const run = fold([...firstRun, secondRun[1]]);
      expect(run.dump).toMatchObject({ state: 'running', attempts: 1, startedAt: '2024-01-05T09:00:01.000Z' });
      expect(run.dump.endedAt).toBeUndefined();
      expect(run.earlierSnapshots).toEqual([S1]);
    });

    describe("told by the trigger a dump start names (its message id), not by the dumper's clock", () => {
      /** An event as the ledger folds it: stored by the broker at `storedAt`, of the trigger at stream sequence `triggerSeq`. */
      const stored = (run: RunRecord, [subject, body]: Event, storedAt: string, triggerSeq?: number) => applyEvent(run, subject, body, storedAt, triggerSeq);
      const dumpStart = (startedAt: string, attempt = 1, delivery = 1): Event => ['snapshot.dump.started', { date: '2024-01-05', attempt, delivery, startedAt }];
      const trigger: Event = ['replication.trigger', { date: '2024-01-05' }];
      /** The first run (trigger #3) dumped S1 and ended at 00:00:02; the re-run's trigger (#17) was stored at 09:00:00.000. */
      const retriggered = () => {
        let run = stored(newRun('2024-01-05'), trigger, '2024-01-05T00:00:00.000Z', 3);
        run = stored(run, dumpStart('2024-01-05T00:00:01.000Z'), '2024-01-05T00:00:01.001Z', 3);
        run = stored(run, ready(S1, '2024-01-05T00:00:02.000Z'), '2024-01-05T00:00:02.001Z');
        return stored(run, trigger, '2024-01-05T09:00:00.000Z', 17);
      };

      it("shows the re-run's dump running, with its start, when the dumper's clock is 20 ms behind the broker's", () => {
        const rerun = retriggered();
        expect(rerun).toMatchObject({ triggeredAt: '2024-01-05T09:00:00.000Z', dump: { state: 'queued' }, earlierSnapshots: [S1] });
        // The dumper took trigger #17 at once; its clock says 08:59:59.980.
        const running = stored(rerun, dumpStart('2024-01-05T08:59:59.980Z'), '2024-01-05T09:00:00.004Z', 17);
        expect(running.dump).toEqual({ state: 'running', attempts: 1, startedAt: '2024-01-05T08:59:59.980Z' });
        const done = stored(running, ready(S2, '2024-01-05T09:00:01.980Z'), '2024-01-05T09:00:02.000Z');
        expect(done).toMatchObject({ triggeredAt: '2024-01-05T09:00:00.000Z', triggerSeq: 17, dump: { state: 'success', snapshotId: S2, startedAt: '2024-01-05T08:59:59.980Z', endedAt: '2024-01-05T09:00:01.980Z' } });
      });

      it("ignores an earlier trigger's late start (#3 delivered again) though its clock puts it after the re-run's trigger", () => {
        const late = stored(retriggered(), dumpStart('2024-01-05T09:00:00.500Z', 1, 2), '2024-01-05T09:00:00.501Z', 3);
        expect(late.dump).toEqual({ state: 'queued', attempts: 0 });
        const own = stored(late, dumpStart('2024-01-05T09:00:01.000Z'), '2024-01-05T09:00:01.001Z', 17);
        expect(own.dump).toEqual({ state: 'running', attempts: 1, startedAt: '2024-01-05T09:00:01.000Z' });
        // Late again, after the re-run's own start: nothing of it reaches the row.
        expect(stored(own, dumpStart('2024-01-05T09:00:00.500Z', 2, 2), '2024-01-05T09:00:02.000Z', 3)).toEqual(own);
      });

      it("starts the next run with a later trigger's dump once this run's dump finished, whatever that dumper's clock says", () => {
        // Trigger #17 came while #3's dump was going; a dumper whose clock is behind starts it "before" #3's dump ended.
        let run = stored(newRun('2024-01-05'), trigger, '2024-01-05T00:00:00.000Z', 3);
        run = stored(run, dumpStart('2024-01-05T00:00:01.000Z'), '2024-01-05T00:00:01.001Z', 3);
        run = stored(run, trigger, '2024-01-05T00:00:01.500Z', 17);
        expect(run).toMatchObject({ triggeredAt: '2024-01-05T00:00:00.000Z', triggerSeq: 3, nextTriggerAt: '2024-01-05T00:00:01.500Z', nextTriggerSeq: 17 });
        run = stored(run, ready(S1, '2024-01-05T00:00:02.000Z'), '2024-01-05T00:00:02.001Z');
        run = stored(run, dumpStart('2024-01-05T00:00:01.900Z'), '2024-01-05T00:00:02.002Z', 17);
        expect(run).toEqual({ date: '2024-01-05', triggeredAt: '2024-01-05T00:00:01.500Z', triggerSeq: 17, dump: { state: 'running', attempts: 1, startedAt: '2024-01-05T00:00:01.900Z' }, loads: {}, earlierSnapshots: [S1] });
      });

      it('reads the trigger from the message id the dumper gives snapshot.dump.started (none for other events, or without one)', () => {
        expect(triggerSeqOf('replication.trigger', 17, '')).toBe(17);
        expect(triggerSeqOf('snapshot.dump.started', 40, 'dump-started:2024-01-05:17:2:3')).toBe(17);
        for (const id of [undefined, '', 'manual-1', 'dump-started:2024-01-05:x:1:1', 'dump-started:2024-01-05:0:1:1', 'dump-started:2024-01-05:17:1']) {
          expect(triggerSeqOf('snapshot.dump.started', 40, id)).toBeUndefined();
        }
        expect(triggerSeqOf('snapshot.ready', 40, 'dump-started:2024-01-05:17:1:1')).toBeUndefined();
      });
    });

    it('after a failed dump, the next snapshot of the date is the new run', () => {
      const failedAt = fold([['snapshot.failed', { date: '2024-01-05', error: 'x', attempts: 3 }]]);
      expect(fold([ready(S2, '2024-01-06T00:00:00.000Z')], failedAt).dump).toMatchObject({ state: 'success', snapshotId: S2, attempts: 1 });
      // A snapshot made before the failure is an earlier run's.
      expect(fold([ready(S1, '2024-01-05T00:00:00.000Z')], failedAt).dump).toMatchObject({ state: 'failed' });
    });
  });

  describe('a snapshot.loaded announced late (the broker out at commit, or a loader killed after COMMIT)', () => {
    // A load started at 00:00:11 (the loader's clock) and committed at 00:00:15 in 4 s; its
    // snapshot.loaded got through at 00:00:46 (a redelivery after ACK_WAIT announcing it from the
    // ledger, or the publish retried once the broker was back).
    const startedAt = '2024-01-05T00:00:11.000Z';
    const loadedAt = '2024-01-05T00:00:15.000Z';
    const storedAt = '2024-01-05T00:00:46.000Z';
    const running = () => {
      let run = newRun('2024-01-05');
      run = applyEvent(run, 'replication.trigger', { date: '2024-01-05' }, '2024-01-05T00:00:00.000Z', 1);
      run = applyEvent(run, 'snapshot.ready', { snapshotId: S1, date: '2024-01-05', location: '/s', createdAt: '2024-01-05T00:00:10.000Z', tables: [] }, '2024-01-05T00:00:10.100Z');
      return applyEvent(run, 'snapshot.load.started', { snapshotId: S1, environment: 'dev', attempt: 1, delivery: 1, startedAt }, '2024-01-05T00:00:11.010Z');
    };
    const announced = (extra: Record<string, unknown>) => applyEvent(running(), 'snapshot.loaded', { snapshotId: S1, environment: 'dev', rows: 10, durationMs: 4_000, attempts: 1, ...extra }, storedAt);

    it('ends the load when it committed (loadedAt), not when the event was stored: 4 s, as db_fanout_load_duration_seconds says', () => {
      const run = announced({ loadedAt });
      expect(run.loads.dev).toMatchObject({ state: 'success', startedAt, endedAt: loadedAt, rows: 10 });
      expect(formatRunsTable([run])).toContain('success 4.0s');
    });

    it('takes loadedAt in any zone, as the instant it names', () => {
      expect(announced({ loadedAt: '2024-01-05T02:00:15+02:00' }).loads.dev.endedAt).toBe(loadedAt);
      expect(announced({ loadedAt: '2024-01-05T00:00:15.000123Z' }).loads.dev.endedAt).toBe(loadedAt);
    });

    it('an event of an older loader (no loadedAt), or one whose loadedAt is no timestamp, ends when the broker stored it', () => {
      expect(announced({}).loads.dev.endedAt).toBe(storedAt);
      for (const bad of ['yesterday', '2024-01-05', '1', '2024-13-45T00:00:00Z', '', 1704413715000, null, { at: loadedAt }]) {
        expect(announced({ loadedAt: bad }).loads.dev.endedAt).toBe(storedAt);
      }
    });

    it('a success first seen as an already-loaded skip takes the commit time from the load\'s own report', () => {
      const skippedFirst = applyEvent(running(), 'snapshot.load.skipped', { snapshotId: S1, environment: 'dev', reason: 'already-loaded' }, '2024-01-05T00:00:40.000Z');
      expect(skippedFirst.loads.dev.endedAt).toBe('2024-01-05T00:00:40.000Z');
      const reported = applyEvent(skippedFirst, 'snapshot.loaded', { snapshotId: S1, environment: 'dev', rows: 10, durationMs: 4_000, attempts: 1, loadedAt }, storedAt);
      expect(reported.loads.dev).toMatchObject({ state: 'success', rows: 10, endedAt: loadedAt });
      // An older loader's report says no time: the skip's stays.
      const older = applyEvent(skippedFirst, 'snapshot.loaded', { snapshotId: S1, environment: 'dev', rows: 10, durationMs: 4_000, attempts: 1 }, storedAt);
      expect(older.loads.dev).toMatchObject({ rows: 10, endedAt: '2024-01-05T00:00:40.000Z' });
    });

    it('a second announcement of the same load changes nothing', () => {
      const run = announced({ loadedAt });
      const again = applyEvent(run, 'snapshot.loaded', { snapshotId: S1, environment: 'dev', rows: 10, durationMs: 4_000, attempts: 1, loadedAt: '2024-01-05T00:01:00.000Z' }, '2024-01-05T00:02:00.000Z');
      expect(again.loads.dev.endedAt).toBe(loadedAt);
    });
  });

  it('ignores load events naming an environment no loader can have (LOADER_ENV is [a-z0-9-]+)', () => {
    const forged = (environment: string): Event => ['snapshot.load.started', { snapshotId: S1, environment, attempt: 1, startedAt: at(1) }];
    const run = fold([started(1), forged('\u001b[2J\u001b]0;owned\u0007'), forged('Dev'), forged('')]);
    expect(Object.keys(run.loads)).toEqual(['dev']);
  });

  it('finds the run of an event: its date, or the date in its snapshot id', () => {
    expect(dateOfSnapshot('20240105-aaaaaaaa')).toBe('2024-01-05');
    expect(runDateOf('snapshot.loaded', { snapshotId: '20231231-bbbbbbbb' })).toBe('2023-12-31');
    expect(runDateOf('snapshot.load.skipped', { snapshotId: '20231231-bbbbbbbb', environment: 'dev', reason: 'superseded' })).toBe('2023-12-31');
    expect(runDateOf('snapshot.failed', { date: '2024-02-01' })).toBe('2024-02-01');
    expect(runDateOf('replication.trigger', {})).toBeUndefined();
  });
});
