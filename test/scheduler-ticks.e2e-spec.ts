import { AppFleet, type RunningApp } from './support/apps';
import { natsNamespace, type NatsNamespace } from './support/nats';
import { OwnNatsServer } from './support/nats-server';
import { until } from './support/pipeline';
import { streamEvents } from './support/stream-events';

/** No tick is lost silently: a tick's trigger is retried until stored, or the next tick says it was given up. */
describe('scheduled ticks while NATS is down', () => {
  let nats: OwnNatsServer;
  const fleet = new AppFleet();
  const namespaces: NatsNamespace[] = [];

  beforeAll(async () => {
    nats = await OwnNatsServer.start();
  });
  afterAll(async () => {
    await fleet.stopAll();
    await Promise.all(namespaces.map((n) => n.cleanup().catch(() => undefined)));
    await nats?.destroy();
  });

  const newNamespace = (label: string) => {
    const namespace = natsNamespace(label, nats.url);
    namespaces.push(namespace);
    return namespace;
  };
  const storedTickIds = async (namespace: NatsNamespace) =>
    (await streamEvents(nats.url, namespace.stream, namespace.prefix)).filter((e) => e.subject === 'replication.trigger').map((e) => e.msgId ?? '');
  const metric = async (app: RunningApp, line: RegExp): Promise<number | undefined> => {
    const text = await (await fetch(`http://127.0.0.1:${app.port}/metrics`)).text();
    const match = text.split('\n').find((l) => line.test(l));
    return match ? Number(match.split(' ').pop()) : undefined;
  };
  const lastPublished = (app: RunningApp) => metric(app, /^db_fanout_last_trigger_published_timestamp_seconds /);
  const tickOf = (line: string) => /\(scheduled:([^),]+)/.exec(line)?.[1];
  /** Waits until the failed count and the given-up log lines agree, read while nothing changes (a line reaches the test a moment after the metric counts it). */
  const logAndMetricAgree = (app: RunningApp, givenUpCount: () => number) => {
    const failedMetric = async () => (await metric(app, /^db_fanout_triggers_total\{result="failed"\} /)) ?? 0;
    return until('the log and the metric to agree', async () => {
      const before = await failedMetric();
      await new Promise((resolve) => setTimeout(resolve, 300));
      return before === givenUpCount() && (await failedMetric()) === before;
    }, 10_000);
  };
  /** Every per-second tick from the first stored or given up to the last is one or the other. */
  const expectEverySecondAccounted = (stored: string[], givenUp: string[]) => {
    const ticks = [...stored, ...givenUp].map((tick) => Date.parse(tick));
    const [from, to] = [Math.min(...ticks), Math.max(...ticks)];
    const accounted = new Set([...stored, ...givenUp]);
    for (let t = from; t <= to; t += 1_000) expect({ tick: new Date(t).toISOString(), accounted: accounted.has(new Date(t).toISOString()) }).toEqual({ tick: new Date(t).toISOString(), accounted: true });
  };

  // Every 20 s: a tick is retried only until the next one comes (by design, see the other test), so
  // NATS must be back, with JetStream ready, within the period. With 10 s that left about 4 s after
  // the restart (attempt 1 fails after its 5 s timeout, attempt 2 waits 1 s), and under a fresh-clone
  // CI's load the restart took longer: the missed tick was given up, as designed, and the test failed.
  // 20 s leaves about 11 s (attempts at +6, +8 and +12 s, each waiting up to 5 s for the stream).
  it('a tick that falls while NATS is down is retried under its message id and stored once NATS is back', async () => {
    const namespace = newNamespace('tickretry');
    const scheduler = await fleet.start('scheduler', { ...namespace.env, SCHEDULE: '*/20 * * * * *', SCHEDULE_TIMEZONE: 'UTC' }, 'scheduler-20s');
    await until('a first tick published', async () => ((await lastPublished(scheduler)) ?? 0) > 0, 30_000);
    const first = (await lastPublished(scheduler))!;
    const missed = new Date((first + 20) * 1000).toISOString(); // the tick NATS will be down for

    await nats.stop();
    // A publish waits up to 5 s for the stream's answer before it counts as failed.
    await until('the missed tick\'s first attempt to fail', () => scheduler.output.includes(`could not publish the trigger for ${missed.slice(0, 10)} (scheduled:${missed}, attempt 1)`), 35_000);
    await nats.restart();

    await until('the missed tick to be published', async () => ((await lastPublished(scheduler)) ?? 0) >= Date.parse(missed) / 1000, 20_000);
    const health = (await (await fetch(`http://127.0.0.1:${scheduler.port}/health`)).json()) as { checks: Record<string, { detail?: string }> };
    // The health detail names the last tick published: the missed one, or the next one (20 s later)
    // when NATS took that long to come back; that the missed tick itself was stored is checked below.
    const reported = /last trigger published for the tick at (\S+?);/.exec(health.checks.schedule.detail ?? '')?.[1];
    expect(reported).toBeDefined();
    expect(Date.parse(reported!)).toBeGreaterThanOrEqual(Date.parse(missed));
    await scheduler.stop();

    const stored = await storedTickIds(namespace);
    expect(stored).toContain(`scheduled:${missed}`);
    expect(new Set(stored).size).toBe(stored.length);
    expect(scheduler.output).not.toContain('gave up on the trigger');
    expect(scheduler.output).toMatch(new RegExp(`triggered replication for \\d{4}-\\d\\d-\\d\\d \\(scheduled:${missed.replaceAll('.', '\\.')}\\) on attempt [2-9]`));
   }, 120_000);

  it('every second: each tick is stored, or given up when the next tick came, in the log and db_fanout_triggers_total{result="failed"}', async () => {
    const namespace = newNamespace('tickgiveup');
    const scheduler = await fleet.start('scheduler', { ...namespace.env, SCHEDULE: '* * * * * *', SCHEDULE_TIMEZONE: 'UTC' }, 'scheduler-1s');
    await until('ticks published', async () => ((await lastPublished(scheduler)) ?? 0) > 0, 15_000);
    await nats.stop();
    const downAt = Date.now();
    await new Promise((resolve) => setTimeout(resolve, 4_000));
    await nats.restart();
    await until('ticks published again after NATS came back', async () => ((await lastPublished(scheduler)) ?? 0) * 1000 > downAt + 4_000, 20_000);
    // The log and the metric agree on how many ticks were given up because the next one came.
    const givenUpLines = () => scheduler.lines.filter((l) => l.text.includes('gave up on the trigger') && l.text.includes('the next tick')).map((l) => tickOf(l.text)!);
    await logAndMetricAgree(scheduler, () => givenUpLines().length);
    await scheduler.stop();
    const givenUp = givenUpLines();
    expect(givenUp.length).toBeGreaterThanOrEqual(2);
    expect(givenUp.every((tick) => tick !== undefined)).toBe(true);
    expect(scheduler.output).toMatch(/gave up on the trigger for \d{4}-\d\d-\d\d \(scheduled:[^)]+\): not confirmed stored, and the next tick \([^)]+\) has come/);

    // Every tick from the first published to the last is accounted for: stored, or named as given up.
    const stored = (await storedTickIds(namespace)).map((id) => id.slice('scheduled:'.length));
    expectEverySecondAccounted(stored, givenUp);
  });

  it('every second, one of two schedulers paused (SIGSTOP) across ticks: the ticks the other stored meanwhile are not given up', async () => {
    const namespace = newNamespace('tickpausepair');
    const env = { ...namespace.env, SCHEDULE: '* * * * * *', SCHEDULE_TIMEZONE: 'UTC' };
    const [paused, awake] = [await fleet.start('scheduler', env, 'scheduler-pair-paused'), await fleet.start('scheduler', env, 'scheduler-pair-awake')];
    await until('ticks published', async () => ((await lastPublished(paused)) ?? 0) > 0 && ((await lastPublished(awake)) ?? 0) > 0, 15_000);
    process.kill(paused.pid, 'SIGSTOP');
    try {
      await new Promise((resolve) => setTimeout(resolve, 3_500));
    } finally {
      process.kill(paused.pid, 'SIGCONT');
    }
    const missedStored = () => paused.lines.filter((l) => l.text.includes('missed while this scheduler was not running, is in the stream already')).map((l) => tickOf(l.text)!);
    await until('the paused scheduler to account for the ticks it missed', () => missedStored().length >= 2, 15_000);
    const metricOf = async (result: string) => (await metric(paused, new RegExp(`^db_fanout_triggers_total\\{result="${result}"\\} `))) ?? 0;
    await until('its metric to count them', async () => (await metricOf('already_stored')) >= missedStored().length, 10_000);
    const failed = await metricOf('failed');
    await Promise.all([paused.stop(), awake.stop()]);

    const stored = await storedTickIds(namespace);
    for (const tick of missedStored()) expect(stored).toContain(`scheduled:${tick}`);
    expect(paused.output).not.toContain('the scheduler was not running at its time');
    expect(failed).toBe(0);
  });

  it('every second, the scheduler paused (SIGSTOP) across ticks: only the latest runs, each tick missed is named in an error and counted failed', async () => {
    const namespace = newNamespace('tickpause');
    const scheduler = await fleet.start('scheduler', { ...namespace.env, SCHEDULE: '* * * * * *', SCHEDULE_TIMEZONE: 'UTC' }, 'scheduler-paused');
    await until('ticks published', async () => ((await lastPublished(scheduler)) ?? 0) > 0, 15_000);
    process.kill(scheduler.pid, 'SIGSTOP');
    try {
      await new Promise((resolve) => setTimeout(resolve, 3_500));
    } finally {
      process.kill(scheduler.pid, 'SIGCONT');
    }
    const resumedAt = Date.now();
    await until('ticks published again after the pause', async () => ((await lastPublished(scheduler)) ?? 0) * 1000 > resumedAt + 1_000, 15_000);
    const missedLines = () => scheduler.lines.filter((l) => l.text.includes('gave up on the trigger') && l.text.includes('the scheduler was not running at its time')).map((l) => tickOf(l.text)!);
    const givenUpLines = () => scheduler.lines.filter((l) => l.text.includes('gave up on the trigger')).map((l) => tickOf(l.text)!);
    await logAndMetricAgree(scheduler, () => givenUpLines().length);
    await scheduler.stop();

    // About three ticks fell in the pause: the latest ran when the scheduler woke, each one before it is named.
    const missed = missedLines();
    expect(missed.length).toBeGreaterThanOrEqual(2);
    expect(missed.every((tick) => tick !== undefined)).toBe(true);
    expect(scheduler.output).toMatch(
      /gave up on the trigger for \d{4}-\d\d-\d\d \(scheduled:[^)]+\): the scheduler was not running at its time .*the next tick \([^)]+\) has come; .*db-fanout trigger --date \d{4}-\d\d-\d\d/,
    );
    const stored = (await storedTickIds(namespace)).map((id) => id.slice('scheduled:'.length));
    expect(missed.filter((tick) => stored.includes(tick))).toEqual([]); // no catch-up: a missed tick is not published
    // Every tick from the first published to the last is accounted for: stored, or named as given up.
    const givenUp = givenUpLines();
    expectEverySecondAccounted(stored, givenUp);
  });
});
