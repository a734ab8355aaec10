import { DateTime } from 'luxon';
import { plainPublish } from './support/nats';
import { PipelineHarness, until } from './support/pipeline';
import { ofSubject, streamEvents } from './support/stream-events';

/** CATCHUP=true: the days missed while no scheduler ran, oldest first, one run at a time. */
describe('the scheduler catching up missed days', () => {
  let pipeline: PipelineHarness;
  const today = DateTime.now().setZone('UTC').startOf('day');
  const days = [2, 1, 0].map((ago) => today.minus({ days: ago }).toISODate()!);

  beforeAll(async () => {
    pipeline = await PipelineHarness.create('catchupsched', { environments: ['dev'] });
    await pipeline.startDumper();
    await pipeline.startLoader('dev');
  });
  afterAll(() => pipeline?.cleanup());

  const stored = () => streamEvents(pipeline.namespace.url, pipeline.namespace.stream, pipeline.namespace.prefix);
  // @daily at 00:00 UTC: today's tick has passed, so today is a missed day too.
  const schedulerEnv = () => ({ ...pipeline.commonEnv, SCHEDULE: '@daily', SCHEDULE_TIMEZONE: 'UTC', START_DATE: days[0], CATCHUP: 'true' });

  it('triggers each missed day from START_DATE, oldest first, the next only after the previous run finished', async () => {
    await pipeline.fleet.start('scheduler', schedulerEnv(), 'scheduler');
    await pipeline.events.waitFor('three days loaded in dev', () => pipeline.loadedIn('dev').length === 3, 60_000);

    const events = await stored();
    const triggers = events.filter((e) => e.subject === 'replication.trigger');
    expect(triggers.map((e) => e.data.date)).toEqual(days);
    expect(triggers.map((e) => e.msgId)).toEqual(days.map((d) => `catchup:${d}`));
    // One at a time: each trigger after the previous day's snapshot was loaded.
    for (let i = 1; i < days.length; i++) {
      const triggerAt = events.indexOf(triggers[i]);
      const previousLoadedAt = events.findIndex((e) => e.subject === 'snapshot.loaded' && String(e.data.snapshotId).startsWith(days[i - 1].replaceAll('-', '')));
      expect(previousLoadedAt).toBeGreaterThan(-1);
      expect(triggerAt).toBeGreaterThan(previousLoadedAt);
    }
    expect(ofSubject(events, 'snapshot.ready').map((e) => e.date)).toEqual(days);
  });

  it('after a restart, continues from the last successful run: nothing is left to do', async () => {
    const before = (await stored()).filter((e) => e.subject === 'replication.trigger').length;
    const again = await pipeline.fleet.start('scheduler', schedulerEnv(), 'scheduler-again');
    await until('the second scheduler to decide', () => again.output.includes('next trigger at'), 10_000);
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    expect((await stored()).filter((e) => e.subject === 'replication.trigger').length).toBe(before);
  });
});

/**
 * A weekly schedule catches up weekly; a date that already has a run is not triggered again; an
 * environment seen in the history whose loader consumer is gone (retired) does not block it.
 */
describe('catching up a weekly schedule', () => {
  let pipeline: PipelineHarness;
  const today = DateTime.now().setZone('UTC').startOf('day');
  const startDate = today.minus({ days: 20 });
  // Mondays at 00:00 UTC from START_DATE through today.
  const mondays: string[] = [];
  for (let day = startDate; day <= today; day = day.plus({ days: 1 })) if (day.weekday === 1) mondays.push(day.toISODate()!);

  beforeAll(async () => {
    pipeline = await PipelineHarness.create('catchupweekly', { environments: ['dev'] });
    await pipeline.startLoader('dev');
  });
  afterAll(() => pipeline?.cleanup());

  const stored = () => streamEvents(pipeline.namespace.url, pipeline.namespace.stream, pipeline.namespace.prefix);

  it('triggers the missed Mondays only, not again a Monday already triggered, without waiting for a retired environment', async () => {
    const { prefix, url } = pipeline.namespace;
    // An environment that loaded long ago and whose consumer is gone since.
    const old = startDate.minus({ days: 30 }).toISODate()!;
    await plainPublish(`${prefix}snapshot.loaded`, JSON.stringify({ snapshotId: `${old.replaceAll('-', '')}-0e0e0e0e`, environment: 'retired', rows: 1, durationMs: 1, attempts: 1 }), undefined, url);
    // The first Monday was triggered by hand and waits for the dumper (not started yet).
    await pipeline.trigger(mondays[0], `manual-${mondays[0]}`);

    const scheduler = await pipeline.fleet.start('scheduler', { ...pipeline.commonEnv, SCHEDULE: '0 0 * * 1', SCHEDULE_TIMEZONE: 'UTC', START_DATE: startDate.toISODate()!, CATCHUP: 'true' });
    await until('catch-up to find the first Monday already triggered', () => scheduler.output.includes(`catch-up: ${mondays[0]} already has a run`), 20_000);
    await pipeline.startDumper();
    await until('catch-up to finish', () => scheduler.output.includes('catch-up done'), 90_000);

    const events = await stored();
    const triggers = events.filter((e) => e.subject === 'replication.trigger');
    expect(triggers.map((e) => [e.data.date, e.msgId])).toEqual([[mondays[0], `manual-${mondays[0]}`], ...mondays.slice(1).map((d) => [d, `catchup:${d}`])]);
    expect(ofSubject(events, 'snapshot.ready').map((e) => e.date)).toEqual(mondays);
    await pipeline.events.waitFor('dev to load every Monday', () => pipeline.loadedIn('dev').length === mondays.length, 30_000);
  });
});

/** A run of a date in the future (a typo: 2062 for 2026) is not the last success catch-up starts after. */
describe('catching up after a run of a future date', () => {
  let pipeline: PipelineHarness;
  const today = DateTime.now().setZone('UTC').startOf('day');
  const days = [1, 0].map((ago) => today.minus({ days: ago }).toISODate()!);
  const future = today.plus({ years: 36 }).toISODate()!;

  beforeAll(async () => {
    pipeline = await PipelineHarness.create('catchupfuture', { environments: ['dev'] });
    await pipeline.startDumper();
    await pipeline.startLoader('dev');
  });
  afterAll(() => pipeline?.cleanup());

  it('still triggers the missed days', async () => {
    await pipeline.trigger(future);
    await pipeline.events.waitFor('the future-dated run to load', () => pipeline.loadedIn('dev').length === 1, 30_000);
    const scheduler = await pipeline.fleet.start('scheduler', { ...pipeline.commonEnv, SCHEDULE: '@daily', SCHEDULE_TIMEZONE: 'UTC', START_DATE: days[0], CATCHUP: 'true' });
    await until('catch-up to finish', () => scheduler.output.includes('catch-up done'), 60_000);
    expect(scheduler.output).toContain('(last successful run: none)');
    const triggers = (await streamEvents(pipeline.namespace.url, pipeline.namespace.stream, pipeline.namespace.prefix)).filter((e) => e.subject === 'replication.trigger');
    expect(triggers.map((e) => e.data.date)).toEqual([future, ...days]);
  }, 90_000);
});
