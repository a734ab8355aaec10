import { catchUpDates, missedTickDates, runIsOver } from './catch-up';
import { newRun, type RunRecord } from './run-ledger/run-record';

describe('missedTickDates', () => {
  const base = { schedule: '@daily', timeZone: 'UTC', startDate: '2024-01-01' };

  it("runs every day of a daily schedule from START_DATE through today once today's tick has passed", async () => {
    expect(await missedTickDates({ ...base, startDate: '2024-03-01', now: new Date('2024-03-04T10:00:00Z') })).toEqual(['2024-03-01', '2024-03-02', '2024-03-03', '2024-03-04']);
  });

  it('starts after the last successful run', async () => {
    expect(await missedTickDates({ ...base, lastSuccess: '2024-03-02', now: new Date('2024-03-04T10:00:00Z') })).toEqual(['2024-03-03', '2024-03-04']);
    expect(await missedTickDates({ ...base, lastSuccess: '2024-03-04', now: new Date('2024-03-04T10:00:00Z') })).toEqual([]);
  });

  it("leaves today out until its scheduled tick, in SCHEDULE_TIMEZONE", async () => {
    const schedule = { ...base, schedule: '0 6 * * *', timeZone: 'America/New_York', lastSuccess: '2024-03-02' };
    // 10:00 UTC is 05:00 in New York (EST): today's 06:00 tick has not come yet.
    expect(await missedTickDates({ ...schedule, now: new Date('2024-03-04T10:00:00Z') })).toEqual(['2024-03-03']);
    expect(await missedTickDates({ ...schedule, now: new Date('2024-03-04T11:30:00Z') })).toEqual(['2024-03-03', '2024-03-04']);
  });

  it('never runs a day before START_DATE, even after an older success', async () => {
    expect(await missedTickDates({ ...base, startDate: '2024-03-03', lastSuccess: '2023-12-31', now: new Date('2024-03-04T10:00:00Z') })).toEqual(['2024-03-03', '2024-03-04']);
  });

  it('follows the schedule, not the calendar: a weekly schedule catches up weekly', async () => {
    // Mondays at 02:00 in Berlin; 2024-03-04 is a Monday.
    const weekly = { schedule: '0 2 * * 1', timeZone: 'Europe/Berlin', startDate: '2024-02-01' };
    expect(await missedTickDates({ ...weekly, now: new Date('2024-03-04T00:30:00Z') })).toEqual(['2024-02-05', '2024-02-12', '2024-02-19', '2024-02-26']);
    expect(await missedTickDates({ ...weekly, now: new Date('2024-03-04T01:30:00Z') })).toEqual(['2024-02-05', '2024-02-12', '2024-02-19', '2024-02-26', '2024-03-04']);
    expect(await missedTickDates({ ...weekly, lastSuccess: '2024-02-19', now: new Date('2024-03-04T01:30:00Z') })).toEqual(['2024-02-26', '2024-03-04']);
    // Weekdays only: a weekend is no missed run.
    expect(await missedTickDates({ ...base, schedule: '0 3 * * 1-5', startDate: '2024-03-01', now: new Date('2024-03-05T12:00:00Z') })).toEqual(['2024-03-01', '2024-03-04', '2024-03-05']);
    // Monthly.
    expect(await missedTickDates({ ...base, schedule: '0 0 1 * *', now: new Date('2024-04-15T00:00:00Z') })).toEqual(['2024-01-01', '2024-02-01', '2024-03-01', '2024-04-01']);
  });

  it('gives a date once however often the schedule fires on it (a run dumps production as it is now)', async () => {
    expect(await missedTickDates({ ...base, schedule: '*/15 * * * *', startDate: '2024-03-03', now: new Date('2024-03-04T10:00:00Z') })).toEqual(['2024-03-03', '2024-03-04']);
    expect(await missedTickDates({ ...base, schedule: '* * * * * *', startDate: '2024-03-01', now: new Date('2024-03-04T00:00:00.500Z') })).toEqual(['2024-03-01', '2024-03-02', '2024-03-03', '2024-03-04']);
  });

  it('gives each date once across clock changes, where cron alone gives a date twice or not at all', async () => {
    // Nuuk, 2024-03-30: 23:00 is skipped (clocks go to 00:00 of the 31st); that tick is still the 30th's.
    expect(await missedTickDates({ schedule: '0 23 * * *', timeZone: 'America/Nuuk', startDate: '2024-03-28', now: new Date('2024-04-01T12:00:00Z') })).toEqual(['2024-03-28', '2024-03-29', '2024-03-30', '2024-03-31']);
    expect(await missedTickDates({ schedule: '0 1 * * *', timeZone: 'Atlantic/Azores', startDate: '2024-10-26', now: new Date('2024-10-28T12:00:00Z') })).toEqual(['2024-10-26', '2024-10-27', '2024-10-28']);
  });

  it('labels a tick with its date in SCHEDULE_TIMEZONE', async () => {
    // 23:30 in Los Angeles is the next day in UTC; the date is Los Angeles'.
    expect(await missedTickDates({ schedule: '30 23 * * *', timeZone: 'America/Los_Angeles', startDate: '2024-03-01', now: new Date('2024-03-03T09:00:00Z') })).toEqual(['2024-03-01', '2024-03-02']);
  });
});

describe('catchUpDates', () => {
  const base = { schedule: '@daily', timeZone: 'UTC', startDate: '2024-01-01', now: new Date('2024-03-10T10:00:00Z') };
  const succeeded = (date: string): RunRecord => ({ ...newRun(date), triggeredAt: `${date}T00:00:00.000Z`, dump: { state: 'success', attempts: 1, endedAt: `${date}T00:05:00.000Z` } });
  const failed = (date: string): RunRecord => ({ ...newRun(date), triggeredAt: `${date}T00:00:00.000Z`, dump: { state: 'failed', attempts: 3 } });
  const triggered = (date: string): RunRecord => ({ ...newRun(date), triggeredAt: `${date}T00:00:00.000Z` });

  it('is missedTickDates when the history has no gap before the last success', async () => {
    const runs = ['2024-03-05', '2024-03-06', '2024-03-07'].map(succeeded);
    expect(await catchUpDates({ ...base, lastSuccess: '2024-03-07', runs })).toEqual({ dates: ['2024-03-08', '2024-03-09', '2024-03-10'], gaps: 0 });
    expect(await catchUpDates({ ...base, lastSuccess: '2024-03-10', runs: [...runs, succeeded('2024-03-08'), succeeded('2024-03-09'), succeeded('2024-03-10')] })).toEqual({ dates: [], gaps: 0 });
    // No success yet: from START_DATE, as before.
    expect(await catchUpDates({ ...base, startDate: '2024-03-08', runs: [triggered('2024-03-08')] })).toEqual({ dates: ['2024-03-08', '2024-03-09', '2024-03-10'], gaps: 0 });
  });

  it('adds the dates between the success before the last one and the last that have no run at all (a restart during catch-up)', async () => {
    // Catch-up of 03-06..03-10 ran 03-06, had triggered 03-07 when today's run succeeded; then a restart.
    const runs = [succeeded('2024-03-05'), succeeded('2024-03-06'), triggered('2024-03-07'), succeeded('2024-03-10')];
    expect(await catchUpDates({ ...base, lastSuccess: '2024-03-10', runs })).toEqual({ dates: ['2024-03-08', '2024-03-09'], gaps: 2 });
    // A failed run is a run too: not triggered again.
    expect(await catchUpDates({ ...base, lastSuccess: '2024-03-10', runs: [...runs.slice(0, 2), failed('2024-03-07'), runs[3]] })).toEqual({ dates: ['2024-03-08', '2024-03-09'], gaps: 2 });
    // Gaps and the missed dates after the last success, oldest first.
    expect(await catchUpDates({ ...base, lastSuccess: '2024-03-08', runs: [succeeded('2024-03-05'), succeeded('2024-03-08')] })).toEqual({ dates: ['2024-03-06', '2024-03-07', '2024-03-09', '2024-03-10'], gaps: 2 });
  });

  it('never waits on a run that has not finished: one that never will (its dumper killed on the last delivery) would hold catch-up at every start', async () => {
    const stuck: RunRecord = { ...triggered('2024-03-08'), dump: { state: 'running', attempts: 1 } };
    expect(await catchUpDates({ ...base, lastSuccess: '2024-03-10', runs: [succeeded('2024-03-07'), stuck, succeeded('2024-03-10')] })).toEqual({ dates: ['2024-03-09'], gaps: 1 });
  });

  it('never goes back before the success before the last, or without one the oldest run (turning CATCHUP on backfills no earlier history), nor before START_DATE', async () => {
    const runs = [succeeded('2024-03-08'), succeeded('2024-03-10')];
    expect(await catchUpDates({ ...base, lastSuccess: '2024-03-10', runs })).toEqual({ dates: ['2024-03-09'], gaps: 1 });
    // A run of an old date by hand long ago, succeeded: the walk starts at the success before the last.
    expect(await catchUpDates({ ...base, lastSuccess: '2024-03-10', runs: [succeeded('2024-01-15'), ...runs] })).toEqual({ dates: ['2024-03-09'], gaps: 1 });
    // No success before the last: from the oldest run.
    expect(await catchUpDates({ ...base, lastSuccess: '2024-03-10', runs: [triggered('2024-03-07'), succeeded('2024-03-10')] })).toEqual({ dates: ['2024-03-08', '2024-03-09'], gaps: 2 });
    // A run before START_DATE (a later START_DATE since): the walk starts at START_DATE.
    expect(await catchUpDates({ ...base, startDate: '2024-03-09', lastSuccess: '2024-03-10', runs: [succeeded('2024-02-01'), succeeded('2024-03-10')] })).toEqual({ dates: ['2024-03-09'], gaps: 1 });
    // Load events alone (a reload of an old snapshot) are no run: the walk does not start there.
    const reloadOnly: RunRecord = { ...newRun('2024-02-01'), loads: { dev: { state: 'success', attempts: 1 } } };
    expect(await catchUpDates({ ...base, lastSuccess: '2024-03-10', runs: [reloadOnly, ...runs] })).toEqual({ dates: ['2024-03-09'], gaps: 1 });
  });

  it('follows the schedule in the gaps too: a weekly schedule has no gap between its weeks', async () => {
    // Mondays; 2024-03-04 is one.
    const weekly = { ...base, schedule: '0 0 * * 1' };
    expect(await catchUpDates({ ...weekly, lastSuccess: '2024-03-04', runs: [succeeded('2024-02-19'), succeeded('2024-03-04')] })).toEqual({ dates: ['2024-02-26'], gaps: 1 });
  });
});

describe('runIsOver', () => {
  const announced = '2024-03-01T00:05:00.000Z';
  const done = (loads: RunRecord['loads']): RunRecord => ({ ...newRun('2024-03-01'), dump: { state: 'success', attempts: 1, endedAt: announced, snapshotId: '20240301-aaaaaaaa' }, loads });
  const consumers = (entries: [string, string][]) => new Map(entries);
  const before = '2024-02-01T00:00:00.000Z';

  it('waits for the dump, then for every environment whose loader consumer exists', () => {
    expect(runIsOver(undefined, consumers([]))).toBe(false);
    expect(runIsOver({ ...newRun('2024-03-01'), dump: { state: 'running', attempts: 1 } }, consumers([]))).toBe(false);
    expect(runIsOver({ ...newRun('2024-03-01'), dump: { state: 'failed', attempts: 3 } }, consumers([['dev', before]]))).toBe(true);
    const env = consumers([['dev', before], ['qa', before]]);
    expect(runIsOver(done({ dev: { state: 'success', attempts: 1 } }), env)).toBe(false);
    expect(runIsOver(done({ dev: { state: 'success', attempts: 1 }, qa: { state: 'running', attempts: 1 } }), env)).toBe(false);
    expect(runIsOver(done({ dev: { state: 'success', attempts: 1 }, qa: { state: 'failed', attempts: 1 } }), env)).toBe(true);
    expect(runIsOver(done({ dev: { state: 'success', attempts: 1 }, qa: { state: 'superseded', attempts: 1 } }), env)).toBe(true);
  });

  it('does not wait for a retired environment (no consumer) nor for one added after the snapshot was announced', () => {
    // "old" reported loads in other runs once, but its consumer is gone.
    expect(runIsOver(done({ dev: { state: 'success', attempts: 1 } }), consumers([['dev', before]]))).toBe(true);
    expect(runIsOver(done({ dev: { state: 'success', attempts: 1 } }), consumers([['dev', before], ['new', '2024-03-01T00:06:00.000Z']]))).toBe(true);
  });
});
