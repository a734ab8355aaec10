import type { INestApplication } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { jetstream, type JetStreamManager, jetstreamManager, RetentionPolicy, StorageType } from '@nats-io/jetstream';
import { connect, headers, nanos, type NatsConnection } from '@nats-io/transport-node';
import { randomBytes } from 'node:crypto';
import { CronTime } from 'cron';
import { Settings } from 'luxon';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadSchedulerConfig, type SchedulerConfig } from '@app/common/config';
import { ensureStream } from '@app/common/messaging';
import { streamSubjects } from '@app/common/contract';
import { MetricsService, ReadinessService } from '@app/common/observability';
import { TcpProxy } from '../../../test/support/tcp-proxy';
import { SchedulerModule } from './scheduler.module';
import { nextFireTime, tickDate } from './schedule-ticks';
import { dueTick, scheduledTrigger, TriggerScheduler } from './trigger-scheduler.service';

const NATS_URL = process.env.TEST_NATS_URL ?? 'nats://127.0.0.1:4222';

describe('scheduledTrigger', () => {
  const config = { timeZone: 'America/New_York', startDate: '2024-01-01' };

  it('asks for the fire time\'s date in SCHEDULE_TIMEZONE, with one message id per fire time', () => {
    // 03:00 UTC on Jan 6 is still Jan 5 in New York.
    expect(scheduledTrigger(new Date('2024-01-06T03:00:00Z'), config)).toEqual({
      payload: { date: '2024-01-05' },
      msgID: 'scheduled:2024-01-06T03:00:00.000Z',
    });
  });

  it('gives two fire times on one day two triggers (one snapshot per tick)', () => {
    const morning = scheduledTrigger(new Date('2024-03-01T14:00:00Z'), config)!;
    const evening = scheduledTrigger(new Date('2024-03-01T22:00:00Z'), config)!;
    expect(morning.payload).toEqual(evening.payload);
    expect(morning.msgID).not.toBe(evening.msgID);
  });

  it('publishes nothing for a date before START_DATE', () => {
    expect(scheduledTrigger(new Date('2024-01-01T03:00:00Z'), config)).toBeUndefined();
    expect(scheduledTrigger(new Date('2024-01-01T05:00:00Z'), config)).toBeDefined();
  });
});

describe('dueTick', () => {
  const everySecond = new CronTime('* * * * * *', 'UTC');
  const at = (iso: string) => new Date(iso);

  it('is the fire time that has come, and gives the one after it', () => {
    expect(dueTick(everySecond, 'UTC', at('2024-01-05T00:00:01Z'), at('2024-01-05T00:00:01.004Z'))).toEqual({ due: at('2024-01-05T00:00:01Z'), next: at('2024-01-05T00:00:02Z'), skipped: [] });
  });

  it('is none when cron calls again for a tick already fired (the next one is still to come)', () => {
    expect(dueTick(everySecond, 'UTC', at('2024-01-05T00:00:02Z'), at('2024-01-05T00:00:01.006Z'))).toEqual({ due: undefined, next: at('2024-01-05T00:00:02Z'), skipped: [] });
  });

  it('collapses ticks missed while the process was busy into the latest one, as cron does', () => {
    expect(dueTick(everySecond, 'UTC', at('2024-01-05T00:00:02Z'), at('2024-01-05T00:00:04.700Z'))).toEqual({
      due: at('2024-01-05T00:00:04Z'),
      next: at('2024-01-05T00:00:05Z'),
      skipped: [at('2024-01-05T00:00:02Z'), at('2024-01-05T00:00:03Z')],
    });
  });

  it('names every fire time it skips (the process paused, its clock stepped), in order, on the schedule in SCHEDULE_TIMEZONE', () => {
    // Paused from before 02:00 on 2024-03-08 until 02:00:05 on the 12th (New York, across the day clocks go forward).
    const daily = new CronTime('0 2 * * *', 'America/New_York');
    expect(dueTick(daily, 'America/New_York', at('2024-03-08T07:00:00Z'), at('2024-03-12T06:00:05Z'))).toEqual({
      due: at('2024-03-12T06:00:00Z'),
      next: at('2024-03-13T06:00:00Z'),
      skipped: [at('2024-03-08T07:00:00Z'), at('2024-03-09T07:00:00Z'), at('2024-03-10T07:00:00Z'), at('2024-03-11T06:00:00Z')],
    });
  });

  it('follows the schedule in SCHEDULE_TIMEZONE (a daily tick at 02:00 in New York)', () => {
    const daily = new CronTime('0 2 * * *', 'America/New_York');
    expect(dueTick(daily, 'America/New_York', at('2024-03-09T07:00:00Z'), at('2024-03-09T07:00:00.300Z'))).toEqual({
      due: at('2024-03-09T07:00:00Z'),
      // 02:00 on March 10 does not exist in New York (clocks go forward): cron fires at 03:00 EDT.
      next: at('2024-03-10T07:00:00Z'),
      skipped: [],
    });
    // A tick at 02:30 that does not exist fires when the hour after the gap begins, 03:00, as the README says.
    const halfPast = new CronTime('30 2 * * *', 'America/New_York');
    expect(dueTick(halfPast, 'America/New_York', at('2024-03-09T07:30:00Z'), at('2024-03-09T07:30:00.300Z')).next).toEqual(at('2024-03-10T07:00:00Z'));
  });

  it('fires once on the day clocks go back, at the scheduled wall-clock time (cron alone gives an extra tick)', () => {
    const newYork = new CronTime('0 2 * * *', 'America/New_York');
    // 2024-11-03: 02:00 EDT becomes 01:00 EST; 02:00 EST (07:00Z) is the day's one 02:00.
    expect(dueTick(newYork, 'America/New_York', at('2024-11-02T06:00:00Z'), at('2024-11-02T06:00:00.300Z')).next).toEqual(at('2024-11-03T07:00:00Z'));
    expect(dueTick(newYork, 'America/New_York', at('2024-11-03T07:00:00Z'), at('2024-11-03T07:00:00.300Z'))).toEqual({ due: at('2024-11-03T07:00:00Z'), next: at('2024-11-04T07:00:00Z'), skipped: [] });
    const paris = new CronTime('0 3 * * *', 'Europe/Paris');
    // 2024-10-27: 03:00 CEST becomes 02:00 CET; 03:00 CET (02:00Z) is the day's one 03:00.
    expect(dueTick(paris, 'Europe/Paris', at('2024-10-26T01:00:00Z'), at('2024-10-26T01:00:00.300Z')).next).toEqual(at('2024-10-27T02:00:00Z'));
    // A tick at 01:00, before the change, and one at 01:00 every day of the year are left as they are.
    const early = new CronTime('0 1 * * *', 'America/New_York');
    expect(dueTick(early, 'America/New_York', at('2024-11-02T05:00:00Z'), at('2024-11-02T05:00:00.300Z')).next).toEqual(at('2024-11-03T05:00:00Z'));
  });

  /** Every fire time of `schedule` in `timeZone` between two instants, as the scheduler walks them. */
  const ticks = (schedule: string, timeZone: string, from: string, to: string): string[] => {
    const cron = new CronTime(schedule, timeZone);
    const fired: string[] = [];
    for (let next = nextFireTime(cron, timeZone, at(from)); next < at(to); next = nextFireTime(cron, timeZone, next)) fired.push(next.toISOString());
    return fired;
  };
  /** The dates those fire times trigger: one run per day, each day once. */
  const dates = (schedule: string, timeZone: string, from: string, to: string): string[] =>
    ticks(schedule, timeZone, from, to).map((fired) => tickDate(new CronTime(schedule, timeZone), timeZone, at(fired)));

  it('fires once a day where clocks change at midnight or by half an hour (cron alone fires twice, or skips a day)', () => {
    // Azores, 2024-10-27: 01:00 (UTC+0) becomes 00:00 (UTC-1); the day's one 01:00 is at 02:00Z.
    expect(ticks('0 1 * * *', 'Atlantic/Azores', '2024-10-25T12:00:00Z', '2024-10-28T12:00:00Z')).toEqual(['2024-10-26T01:00:00.000Z', '2024-10-27T02:00:00.000Z', '2024-10-28T02:00:00.000Z']);
    // Nuuk, 2024-03-30: at 23:00 (-02) clocks go to 00:00 (-01) of the 31st: the 30th's 23:00 fires
    // when the gap ends (01:00Z) and is the 30th's run; the 31st's is at its own 23:00.
    expect(ticks('0 23 * * *', 'America/Nuuk', '2024-03-28T12:00:00Z', '2024-04-01T12:00:00Z')).toEqual(['2024-03-29T01:00:00.000Z', '2024-03-30T01:00:00.000Z', '2024-03-31T01:00:00.000Z', '2024-04-01T00:00:00.000Z']);
    expect(dates('0 23 * * *', 'America/Nuuk', '2024-03-28T12:00:00Z', '2024-04-01T12:00:00Z')).toEqual(['2024-03-28', '2024-03-29', '2024-03-30', '2024-03-31']);
    expect(dates('0 0 * * *', 'America/Nuuk', '2024-03-29T12:00:00Z', '2024-04-01T12:00:00Z')).toEqual(['2024-03-30', '2024-03-31', '2024-04-01']);
    expect(dates('0 1 * * *', 'Atlantic/Azores', '2024-10-25T12:00:00Z', '2024-10-28T12:00:00Z')).toEqual(['2024-10-26', '2024-10-27', '2024-10-28']);
    // Lord Howe, 2024-10-06: 02:00 (+10:30) becomes 02:30 (+11): a 02:00 tick fires when the gap ends.
    expect(ticks('0 2 * * *', 'Australia/Lord_Howe', '2024-10-04T12:00:00Z', '2024-10-07T12:00:00Z')).toEqual(['2024-10-04T15:30:00.000Z', '2024-10-05T15:30:00.000Z', '2024-10-06T15:00:00.000Z']);
    // Havana, 2024-11-03: 01:00 (-04) becomes 00:00 (-05): one 00:30.
    expect(ticks('30 0 * * *', 'America/Havana', '2024-11-02T12:00:00Z', '2024-11-04T12:00:00Z')).toEqual(['2024-11-03T04:30:00.000Z', '2024-11-04T05:30:00.000Z']);
  });

  it('fires each wall-clock time of an hourly schedule once through the hour clocks go back', () => {
    expect(ticks('30 * * * *', 'America/New_York', '2024-11-03T04:00:00Z', '2024-11-03T08:00:00Z')).toEqual(['2024-11-03T04:30:00.000Z', '2024-11-03T05:30:00.000Z', '2024-11-03T07:30:00.000Z']);
  });
});

describe('TriggerScheduler (real NATS)', () => {
  const id = randomBytes(4).toString('hex');
  let config: SchedulerConfig;
  let nc: NatsConnection;

  beforeAll(async () => {
    config = loadSchedulerConfig({ NATS_URL, NATS_STREAM: `SPEC_SCHED_${id}`, NATS_SUBJECT_PREFIX: `spec_sched_${id}.`, SCHEDULE: '0 0 1 1 *' });
    nc = await connect({ servers: NATS_URL });
  });

  afterAll(async () => {
    await (await jetstreamManager(nc)).streams.delete(config.nats.stream).catch(() => undefined);
    // The run ledger's KV bucket, which the scheduler makes beside its stream.
    await (await jetstreamManager(nc)).streams.delete(`KV_${config.nats.stream}_RUNS`).catch(() => undefined);
    await nc.close();
  });

  /**
   * A scheduler on a stream of its own (`own`), so the triggers a test stores are no other test's
   * "last tick": `seed` stores what an earlier run left before the app starts; `work` gets the app
   * and its log lines. Then the app is closed and the stream and its run ledger's KV bucket deleted.
   */
  async function withOwnScheduler(
    own: SchedulerConfig,
    seed: () => Promise<unknown>,
    work: (started: { app: INestApplication; lines: string[]; jsm: JetStreamManager }) => Promise<void>,
  ): Promise<void> {
    const jsm = await jetstreamManager(nc);
    await ensureStream(jsm, own.nats);
    await seed();
    const lines: string[] = [];
    const collect = (message: unknown) => void lines.push(String(message));
    const moduleRef = await Test.createTestingModule({ imports: [SchedulerModule.forRoot(own)] }).compile();
    moduleRef.useLogger({ log: collect, error: collect, warn: collect, debug: () => undefined, verbose: () => undefined });
    const app = moduleRef.createNestApplication();
    await app.init();
    try {
      await work({ app, lines, jsm });
    } finally {
      await app.close();
      await jsm.streams.delete(own.nats.stream).catch(() => undefined);
      // The run ledger's KV bucket, which the scheduler makes beside its stream.
      await jsm.streams.delete(`KV_${own.nats.stream}_RUNS`).catch(() => undefined);
    }
  }

  it('registers its cron job and stores one trigger per fire time, however often it fires', async () => {
    const moduleRef = await Test.createTestingModule({ imports: [SchedulerModule.forRoot(config)] }).compile();
    moduleRef.useLogger(false);
    const app = moduleRef.createNestApplication();
    await app.init();
    try {
      const scheduler = app.get(TriggerScheduler);
      const fireTime = new Date('2024-01-05T00:00:00Z');
      await scheduler.fire(fireTime);
      await scheduler.fire(fireTime); // a second scheduler firing the same tick
      await scheduler.fire(new Date('2024-01-06T00:00:00Z'));

      const stream = await (await jetstreamManager(nc)).streams.info(config.nats.stream);
      expect(stream.state.messages).toBe(2);
      const first = await (await jetstreamManager(nc)).streams.getMessage(config.nats.stream, { seq: 1 });
      expect(first?.subject).toBe(`spec_sched_${id}.replication.trigger`);
      expect(first?.json()).toEqual({ date: '2024-01-05' });
      expect(first?.header.get('Nats-Msg-Id')).toBe('scheduled:2024-01-05T00:00:00.000Z');
    } finally {
      await app.close();
    }
  });

  it('gives up, loudly, only the missed ticks no other scheduler stored; a long pause names the latest ten and sums up the rest', async () => {
    const own = loadSchedulerConfig({ NATS_URL, NATS_STREAM: `SPEC_MISSED_${id}`, NATS_SUBJECT_PREFIX: `spec_missed_${id}.`, SCHEDULE: '0 0 1 1 *' });
    // 14 hourly ticks missed on 2024-03-01; another scheduler stored two of them meanwhile.
    const missed = Array.from({ length: 14 }, (_, hour) => new Date(Date.UTC(2024, 2, 1, hour)));
    await withOwnScheduler(own, () => Promise.resolve(), async ({ app, lines }) => {
      // Stored once this scheduler has started: stored before, they would be ticks it missed while
      // stopped, and it would run the yearly schedule's latest since then at its start.
      await app.get(TriggerScheduler).whenStarted();
      for (const fireTime of [missed[3], missed[13]]) {
        await jetstream(nc).publish(`${own.nats.subjectPrefix}replication.trigger`, JSON.stringify({ date: '2024-03-01' }), { msgID: `scheduled:${fireTime.toISOString()}` });
      }
      await app.get(TriggerScheduler).reportMissed(missed, new Date(Date.UTC(2024, 2, 1, 14)));
      const counted = await app.get(MetricsService).registry.getSingleMetricAsString('db_fanout_triggers_total');
      expect(counted).toContain('db_fanout_triggers_total{result="already_stored"} 2');
      expect(counted).toContain('db_fanout_triggers_total{result="failed"} 12');
      expect(lines.filter((l) => l.includes('is in the stream already (another scheduler'))).toHaveLength(2);
      const named = lines.filter((l) => l.startsWith('gave up on the trigger for 2024-03-01'));
      // The latest ten of the twelve lost, by name; the two before them in one line.
      expect(named.map((l) => /\(scheduled:([^)]+)\)/.exec(l)?.[1])).toEqual([2, 4, 5, 6, 7, 8, 9, 10, 11, 12].map((h) => missed[h].toISOString()));
      expect(lines.filter((l) => l.startsWith('gave up on 2 triggers from 2024-03-01T00:00:00.000Z to 2024-03-01T01:00:00.000Z'))).toHaveLength(1);
    });
  });

  it('knows the last tick an earlier run stored when it starts again: /health and the metric do not say never', async () => {
    // An earlier run stored this year's tick (the schedule's latest: 1 January) and last year's; a
    // trigger by hand has no tick.
    const year = new Date().getUTCFullYear();
    const latest = `${year}-01-01T00:00:00.000Z`;
    await ensureStream(await jetstreamManager(nc), config.nats);
    const trigger = (date: string, msgID: string) => jetstream(nc).publish(`${config.nats.subjectPrefix}replication.trigger`, JSON.stringify({ date }), { msgID });
    await trigger(`${year}-01-01`, `scheduled:${latest}`);
    await trigger(`${year - 1}-01-01`, `scheduled:${year - 1}-01-01T00:00:00.000Z`);
    await trigger('2024-02-01', 'by-hand-1');
    const storedBefore = (await (await jetstreamManager(nc)).streams.info(config.nats.stream)).state.messages;
    const moduleRef = await Test.createTestingModule({ imports: [SchedulerModule.forRoot(config)] }).compile();
    moduleRef.useLogger(false);
    const app = moduleRef.createNestApplication();
    await app.init();
    try {
      const readiness = app.get(ReadinessService);
      const detail = () => readiness.snapshot().schedule?.detail ?? '';
      const deadline = Date.now() + 10_000;
      while (!detail().startsWith('last trigger') && Date.now() < deadline) await sleep(50);
      expect(detail()).toMatch(new RegExp(`^last trigger published for the tick at ${latest.replaceAll('.', '\\.')}; next tick at `));
      expect(await app.get(MetricsService).registry.getSingleMetricAsString('db_fanout_last_trigger_published_timestamp_seconds')).toContain(
        `db_fanout_last_trigger_published_timestamp_seconds ${Date.parse(latest) / 1000}`,
      );
      // No tick passed since the last stored one: nothing runs late.
      await sleep(500);
      expect((await (await jetstreamManager(nc)).streams.info(config.nats.stream)).state.messages).toBe(storedBefore);
    } finally {
      await app.close();
    }
  });

  it('runs the latest tick missed while it was stopped when it starts again, and gives up the ones before it by name', async () => {
    const own = loadSchedulerConfig({ NATS_URL, NATS_STREAM: `SPEC_RESTART_${id}`, NATS_SUBJECT_PREFIX: `spec_restart_${id}.`, SCHEDULE: '0 0 * * *', SCHEDULE_TIMEZONE: 'UTC' });
    // The earlier run stored the tick of two days ago, then was stopped across yesterday's and today's.
    const day = (daysAgo: number) => new Date(Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate() - daysAgo));
    const seed = () => jetstream(nc).publish(`${own.nats.subjectPrefix}replication.trigger`, JSON.stringify({ date: day(2).toISOString().slice(0, 10) }), { msgID: `scheduled:${day(2).toISOString()}` });
    await withOwnScheduler(own, seed, async ({ app, lines, jsm }) => {
      const counted = () => app.get(MetricsService).registry.getSingleMetricAsString('db_fanout_triggers_total');
      const deadline = Date.now() + 15_000;
      while (!((await counted()).includes('result="failed"} 1') && (await counted()).includes('result="published"} 1')) && Date.now() < deadline) await sleep(100);
      expect(await counted()).toContain('db_fanout_triggers_total{result="published"} 1');
      expect(await counted()).toContain('db_fanout_triggers_total{result="failed"} 1');
      const last = await jsm.streams.getMessage(own.nats.stream, { last_by_subj: `${own.nats.subjectPrefix}replication.trigger` });
      expect({ id: last?.header.get('Nats-Msg-Id'), payload: last?.json() }).toEqual({ id: `scheduled:${day(0).toISOString()}`, payload: { date: day(0).toISOString().slice(0, 10) } });
      expect(last?.header.get('Db-Fanout-Schedule')).toBe('0 0 * * * (UTC)');
      expect((await jsm.streams.info(own.nats.stream)).state.messages).toBe(2);
      expect(lines.filter((l) => l.startsWith(`gave up on the trigger for ${day(1).toISOString().slice(0, 10)} (scheduled:${day(1).toISOString()})`))).toHaveLength(1);
      expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^the tick at ${day(0).toISOString().replaceAll('.', '\\.')} passed while no scheduler was running`)));
    });
  });

  it('counts no tick as missed when it starts under another schedule than the last stored tick was fired under', async () => {
    const own = loadSchedulerConfig({ NATS_URL, NATS_STREAM: `SPEC_RESCHEDULED_${id}`, NATS_SUBJECT_PREFIX: `spec_rescheduled_${id}.`, SCHEDULE: '0 * * * *', SCHEDULE_TIMEZONE: 'UTC' });
    // Today's midnight tick, fired by @daily; the new schedule is hourly, and midnight is one of its ticks too.
    const midnight = new Date(Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate()));
    const header = headers();
    header.set('Db-Fanout-Schedule', '@daily (UTC)');
    const seed = () => jetstream(nc).publish(`${own.nats.subjectPrefix}replication.trigger`, JSON.stringify({ date: midnight.toISOString().slice(0, 10) }), { msgID: `scheduled:${midnight.toISOString()}`, headers: header });
    await withOwnScheduler(own, seed, async ({ app, lines, jsm }) => {
      await app.get(TriggerScheduler).whenStarted();
      expect(lines).toContainEqual(`the last stored tick (${midnight.toISOString()}) was fired under @daily (UTC), not 0 * * * * (UTC): no tick of this one counts as missed`);
      expect(lines.filter((l) => l.startsWith('gave up'))).toEqual([]);
      expect(await app.get(MetricsService).registry.getSingleMetricAsString('db_fanout_triggers_total')).not.toContain('result="failed"');
      expect((await jsm.streams.info(own.nats.stream)).state.messages).toBe(1);
    });
  });

  describe('after the stream\'s duplicate window (here 1 s) has passed', () => {
    /** The stream made beforehand, as an operator may have: the apps leave an existing stream as it is. */
    async function streamWithShortWindow(name: string, prefix: string): Promise<void> {
      await (await jetstreamManager(nc)).streams.add({
        name,
        subjects: streamSubjects(prefix),
        retention: RetentionPolicy.Limits,
        storage: StorageType.File,
        duplicate_window: nanos(1_000),
      });
    }

    async function triggersStored(stream: string): Promise<string[]> {
      const jsm = await jetstreamManager(nc);
      const { state } = await jsm.streams.info(stream);
      const ids: string[] = [];
      for (let seq = state.first_seq; seq <= state.last_seq && state.messages > 0; seq++) {
        const message = await jsm.streams.getMessage(stream, { seq });
        if (message) ids.push(message.header.get('Nats-Msg-Id'));
      }
      return ids;
    }

    it('does not store a tick again that another scheduler stored: a late scheduler looks first', async () => {
      const late = loadSchedulerConfig({ NATS_URL, NATS_STREAM: `SPEC_SCHEDLATE_${id}`, NATS_SUBJECT_PREFIX: `spec_schedlate_${id}.`, SCHEDULE: '0 0 1 1 *' });
      await streamWithShortWindow(late.nats.stream, late.nats.subjectPrefix);
      const fireTime = new Date('2024-01-05T00:00:00Z');
      const msgID = `scheduled:${fireTime.toISOString()}`;
      const moduleRef = await Test.createTestingModule({ imports: [SchedulerModule.forRoot(late)] }).compile();
      moduleRef.useLogger(false);
      const app = moduleRef.createNestApplication();
      await app.init();
      // The other scheduler stores the tick once this one has started (stored before, it would be a
      // tick this one missed while stopped), and this one fires it only after the window passed.
      await app.get(TriggerScheduler).whenStarted();
      await jetstream(nc).publish(`${late.nats.subjectPrefix}replication.trigger`, JSON.stringify({ date: '2024-01-05' }), { msgID });
      await sleep(1_500);
      try {
        expect(await app.get(TriggerScheduler).fire(fireTime)).toBe('published');
        expect(await triggersStored(late.nats.stream)).toEqual([msgID]);
        // A tick nobody stored is still published.
        expect(await app.get(TriggerScheduler).fire(new Date('2024-01-06T00:00:00Z'))).toBe('published');
        expect(await triggersStored(late.nats.stream)).toEqual([msgID, 'scheduled:2024-01-06T00:00:00.000Z']);
      } finally {
        await app.close();
        await (await jetstreamManager(nc)).streams.delete(late.nats.stream).catch(() => undefined);
        // The run ledger's KV bucket, which the scheduler makes beside its stream.
        await (await jetstreamManager(nc)).streams.delete(`KV_${late.nats.stream}_RUNS`).catch(() => undefined);
      }
    });

    it('does not store a tick again when its retries outlast the window: cut off, it finds the tick another scheduler stored', async () => {
      const proxy = await TcpProxy.start({ host: '127.0.0.1', port: Number(new URL(NATS_URL).port || 4222) });
      const cutOff = loadSchedulerConfig({
        NATS_URL: `nats://127.0.0.1:${proxy.port}`,
        NATS_STREAM: `SPEC_SCHEDCUT_${id}`,
        NATS_SUBJECT_PREFIX: `spec_schedcut_${id}.`,
        SCHEDULE: '0 0 1 1 *',
      });
      await streamWithShortWindow(cutOff.nats.stream, cutOff.nats.subjectPrefix);
      const moduleRef = await Test.createTestingModule({ imports: [SchedulerModule.forRoot(cutOff)] }).compile();
      moduleRef.useLogger(false);
      const app = moduleRef.createNestApplication();
      await app.init();
      try {
        const fireTime = new Date(Math.floor(Date.now() / 1000) * 1000);
        const msgID = `scheduled:${fireTime.toISOString()}`;
        await proxy.down();
        const fired = app.get(TriggerScheduler).fire(fireTime);
        // The other scheduler, still connected, stores the tick; this one's window then passes.
        await jetstream(nc).publish(`${cutOff.nats.subjectPrefix}replication.trigger`, JSON.stringify({ date: fireTime.toISOString().slice(0, 10) }), { msgID });
        await sleep(1_500);
        await proxy.up();
        expect(await fired).toBe('published');
        expect(await triggersStored(cutOff.nats.stream)).toEqual([msgID]);
      } finally {
        await app.close();
        await proxy.down();
        await (await jetstreamManager(nc)).streams.delete(cutOff.nats.stream).catch(() => undefined);
        // The run ledger's KV bucket, which the scheduler makes beside its stream.
        await (await jetstreamManager(nc)).streams.delete(`KV_${cutOff.nats.stream}_RUNS`).catch(() => undefined);
      }
    }, 30_000);
  });

  it("publishes a tick that cron fires from its start() under the tick's own whole-second id (a busy machine)", async () => {
    // cron's start() reads the clock twice, for the next fire time (sendAt) and for the timeout to
    // it; on a busy machine the whole second can pass in between, and cron then fires at once, from
    // start(), before TriggerScheduler has finished starting the job. The clock (luxon's, cron's own)
    // here passes the second exactly there: 1 ms before it for every read until that second read.
    const realNow = Settings.now;
    let second: number | undefined;
    let passed = false;
    Settings.now = () => {
      second ??= Math.ceil((realNow() + 1) / 1000) * 1000;
      if (!passed && /getTimeout/.test(new Error().stack ?? '') && !/sendAt/.test(new Error().stack ?? '')) passed = true;
      return passed ? second + 1 : second - 1;
    };
    const warn = jest.spyOn(console, 'warn').mockImplementation(() => undefined);
    const everySecond = loadSchedulerConfig({
      NATS_URL,
      NATS_STREAM: `SPEC_SCHEDBUSY_${id}`,
      NATS_SUBJECT_PREFIX: `spec_schedbusy_${id}.`,
      SCHEDULE: '* * * * * *',
    });
    const moduleRef = await Test.createTestingModule({ imports: [SchedulerModule.forRoot(everySecond)] }).compile();
    moduleRef.useLogger(false);
    const app = moduleRef.createNestApplication();
    try {
      await app.init();
      Settings.now = realNow;
      // The situation happened: cron fired at once from start().
      expect(warn.mock.calls.map(([message]) => String(message))).toEqual([expect.stringMatching(/Missed execution deadline by 1ms .*Executing immediately/)]);
      const jsm = await jetstreamManager(nc);
      let first;
      for (const deadline = Date.now() + 5_000; !first && Date.now() < deadline; ) {
        first = await jsm.streams.getMessage(everySecond.nats.stream, { seq: 1 }).catch(() => undefined);
        if (!first) await new Promise((resolve) => setTimeout(resolve, 50));
      }
      expect(first?.header.get('Nats-Msg-Id')).toBe(`scheduled:${new Date(second!).toISOString()}`);
    } finally {
      Settings.now = realNow;
      warn.mockRestore();
      await app.close();
      await (await jetstreamManager(nc)).streams.delete(everySecond.nats.stream).catch(() => undefined);
      // The run ledger's KV bucket, which the scheduler makes beside its stream.
      await (await jetstreamManager(nc)).streams.delete(`KV_${everySecond.nats.stream}_RUNS`).catch(() => undefined);
    }
  });
});
