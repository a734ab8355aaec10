import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { AppFleet, type RunningApp } from './support/apps';
import { createDatabase, type TestDatabase } from './support/databases';
import { EventCollector, NATS_URL, natsNamespace, plainPublish } from './support/nats';
import { until } from './support/pipeline';

/** Every trigger stored in the stream, with its message id. */
async function storedTriggers(stream: string, prefix: string): Promise<{ id: string; date: string }[]> {
  const nc = await connect({ servers: NATS_URL });
  try {
    // An ordered consumer over the whole stream (filter_subjects needs nats-server 2.10).
    const consumer = await jetstream(nc).consumers.get(stream);
    const triggers: { id: string; date: string }[] = [];
    for (;;) {
      const msg = await consumer.next({ expires: 1_000 });
      if (!msg) return triggers;
      if (msg.subject !== `${prefix}replication.trigger`) continue;
      triggers.push({ id: msg.headers?.get('Nats-Msg-Id') ?? '', date: msg.json<{ date: string }>().date });
    }
  } finally {
    await nc.close();
  }
}

/** The calendar date (YYYY-MM-DD) of an instant in a time zone. */
const dateIn = (timeZone: string, at: Date) => new Intl.DateTimeFormat('en-CA', { timeZone }).format(at);
const todayIn = (timeZone: string) => dateIn(timeZone, new Date());

describe('the scheduler', () => {
  const fleet = new AppFleet();
  const namespaces: ReturnType<typeof natsNamespace>[] = [];
  const newNamespace = (label: string) => {
    const namespace = natsNamespace(label);
    namespaces.push(namespace);
    return namespace;
  };

  afterAll(async () => {
    await fleet.stopAll();
    await Promise.all(namespaces.map((n) => n.cleanup()));
  });

  it('two schedulers firing the same ticks store one trigger per tick', async () => {
    const namespace = newNamespace('sched');
    const events = await EventCollector.start(namespace);
    // A zone whose calendar date differs from UTC's right now, so ignoring SCHEDULE_TIMEZONE shows.
    const zone = new Date().getUTCHours() >= 10 ? 'Pacific/Kiritimati' : 'Pacific/Pago_Pago';
    expect(dateIn(zone, new Date())).not.toBe(new Date().toISOString().slice(0, 10));
    const env = { ...namespace.env, SCHEDULE: '* * * * * *', SCHEDULE_TIMEZONE: zone };
    const [a, b] = await Promise.all([fleet.start('scheduler', env, 'scheduler-a'), fleet.start('scheduler', env, 'scheduler-b')]);
    await events.waitFor('both schedulers to publish several ticks', (c) => c.of('replication.trigger').length >= 6, 15_000);
    await Promise.all([a.stop(), b.stop()]);
    await events.stop();

    const published = events.of('replication.trigger').length;
    const stored = await storedTriggers(namespace.stream, namespace.prefix);
    const ids = new Set(stored.map((t) => t.id));
    expect(ids.size).toBe(stored.length);
    expect([...ids].every((id) => /^scheduled:\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z$/.test(id))).toBe(true);
    // Both published every tick; the stream kept one of each pair.
    expect(stored.length).toBeGreaterThanOrEqual(3);
    expect(stored.length).toBeLessThanOrEqual(Math.ceil(published / 2) + 1);
    // Each trigger carries the calendar date of its own fire time in SCHEDULE_TIMEZONE.
    for (const trigger of stored) {
      const fireTime = trigger.id.slice('scheduled:'.length);
      expect({ id: trigger.id, date: trigger.date }).toEqual({ id: trigger.id, date: dateIn(zone, new Date(fireTime)) });
    }
  });

  it('two schedulers: each stored tick is logged and counted published by one of them; the other says it was stored already', async () => {
    const namespace = newNamespace('schedcount');
    // Every 2 s: the odd seconds between ticks leave time to read both schedulers and the stream while nothing changes.
    const env = { ...namespace.env, SCHEDULE: '*/2 * * * * *', SCHEDULE_TIMEZONE: 'UTC' };
    const [a, b] = await Promise.all([fleet.start('scheduler', env, 'scheduler-count-a'), fleet.start('scheduler', env, 'scheduler-count-b')]);
    const nc = await connect({ servers: NATS_URL });
    const storedCount = async () => (await (await jetstreamManager(nc)).streams.info(namespace.stream)).state.messages;
    const counted = async (app: RunningApp, result: string): Promise<number> => {
      const text = await (await fetch(`http://127.0.0.1:${app.port}/metrics`)).text();
      const line = text.split('\n').find((l) => l.startsWith(`db_fanout_triggers_total{result="${result}"} `));
      return line ? Number(line.split(' ').pop()) : 0;
    };
    /** The next odd second: a tick fired 1 s before, and the next comes 1 s after. */
    const betweenTicks = () => new Promise((resolve) => setTimeout(resolve, (3_000 - (Date.now() % 2_000)) % 2_000));
    let seen: { stored: number; published: number[]; alreadyStored: number[] } | undefined;
    let stoppedAt = Infinity;
    try {
      await until('several ticks stored', async () => (await storedCount().catch(() => 0)) >= 4, 30_000);
      // The stream and both schedulers' counts, read between two ticks, unchanged while read.
      for (const deadline = Date.now() + 20_000; !seen && Date.now() < deadline; ) {
        await betweenTicks();
        const before = JSON.stringify([await counted(a, 'published'), await counted(b, 'published'), await counted(a, 'already_stored'), await counted(b, 'already_stored')]);
        const stored = await storedCount();
        const published = [await counted(a, 'published'), await counted(b, 'published')];
        const alreadyStored = [await counted(a, 'already_stored'), await counted(b, 'already_stored')];
        if (JSON.stringify([...published, ...alreadyStored]) === before && (await storedCount()) === stored) seen = { stored, published, alreadyStored };
      }
      await betweenTicks();
      stoppedAt = Date.now();
      await Promise.all([a.stop(), b.stop()]);
    } finally {
      await nc.close();
    }
    expect(seen).toBeDefined();
    const { stored, published, alreadyStored } = seen!;
    // One trigger per tick in the stream, and one publish of it counted across the two schedulers.
    expect(published[0] + published[1]).toBe(stored);
    // The other scheduler's copy of a tick (both were up for all but the first ticks) counts as stored already.
    expect(alreadyStored[0] + alreadyStored[1]).toBeGreaterThanOrEqual(1);
    expect(alreadyStored[0] + alreadyStored[1]).toBeLessThanOrEqual(stored);

    // The logs say the same: every stored tick (up to the stop) is `triggered replication for` in exactly one of them.
    const beforeStop = (id: string) => Date.parse(id.slice('scheduled:'.length)) < stoppedAt;
    const triggers = await storedTriggers(namespace.stream, namespace.prefix);
    expect(new Set(triggers.map((t) => t.id)).size).toBe(triggers.length);
    const triggeredLines = [a, b].flatMap((app) => app.lines.map((l) => /triggered replication for \S+ \((scheduled:[^)]+)\)/.exec(l.text)?.[1]).filter((id) => id !== undefined));
    expect(triggeredLines.filter(beforeStop).sort()).toEqual(triggers.map((t) => t.id).filter(beforeStop).sort());
    expect(triggers.filter((t) => beforeStop(t.id)).length).toBeGreaterThanOrEqual(stored);
    expect(a.output + b.output).toMatch(/the trigger for \d{4}-\d\d-\d\d \(scheduled:[^)]+\) was stored already \(another scheduler's/);
  });

  it('publishes no trigger for a date before START_DATE', async () => {
    const namespace = newNamespace('schedstart');
    const scheduler = await fleet.start('scheduler', { ...namespace.env, SCHEDULE: '* * * * * *', START_DATE: '2999-01-01' });
    const deadline = Date.now() + 10_000;
    while (!scheduler.output.includes('before START_DATE 2999-01-01') && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await scheduler.stop();
    expect(scheduler.output).toContain('before START_DATE 2999-01-01');
    expect(await storedTriggers(namespace.stream, namespace.prefix)).toEqual([]);
  });

  describe('with the dumper', () => {
    const snapshotDir = mkdtempSync(join(tmpdir(), 'db-fanout-sched-'));
    let source: TestDatabase;

    beforeAll(async () => {
      source = await createDatabase('sched_prod', 'CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2);');
    });
    afterAll(async () => {
      await source?.drop();
      rmSync(snapshotDir, { recursive: true, force: true });
    });

    it('an empty trigger body means today in SCHEDULE_TIMEZONE', async () => {
      const namespace = newNamespace('schedempty');
      const events = await EventCollector.start(namespace);
      const timeZone = 'Pacific/Kiritimati';
      await fleet.start('dumper', { ...namespace.env, SOURCE_DATABASE_URL: source.url, SNAPSHOT_DIR: snapshotDir, SCHEDULE_TIMEZONE: timeZone });
      await plainPublish(`${namespace.prefix}replication.trigger`, '');
      await plainPublish(`${namespace.prefix}replication.trigger`, '{}');
      await events.waitFor('two snapshots', (c) => c.of('snapshot.ready').length === 2);
      await events.stop();
      const [first, second] = events.of('snapshot.ready');
      expect(first.date).toBe(todayIn(timeZone));
      expect(second.date).toBe(todayIn(timeZone));
      // A re-run of the same date gets its own snapshot.
      expect(first.snapshotId).not.toBe(second.snapshotId);
      expect(first.location).not.toBe(second.location);
    });
  });
});
