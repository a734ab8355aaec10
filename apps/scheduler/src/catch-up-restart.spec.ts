import { Test } from '@nestjs/testing';
import type { INestApplication } from '@nestjs/common';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { DateTime } from 'luxon';
import { loadSchedulerConfig } from '@app/common/config';
import { ensureStream } from '@app/common/messaging';
import { CatchUpService } from './catch-up.service';
import { SchedulerModule } from './scheduler.module';

const NATS_URL = process.env.TEST_NATS_URL ?? 'nats://127.0.0.1:4222';

/**
 * A scheduler restarted during catch-up, after a later date (today's scheduled tick, a manual
 * trigger) succeeded: the dates catch-up had not finished are gaps in the run history before that
 * success, and catch-up still runs them.
 */
describe('CatchUpService restarted during catch-up (real NATS)', () => {
  const id = randomBytes(4).toString('hex');
  let nc: NatsConnection;

  beforeAll(async () => {
    nc = await connect({ servers: NATS_URL });
  });
  afterAll(() => nc.close());

  it("catches up the missed dates it had not finished, though today's run succeeded meanwhile", async () => {
    const day = (ago: number) => DateTime.now().setZone('UTC').minus({ days: ago }).toISODate()!;
    const [d3, d2, d1, today] = [day(3), day(2), day(1), day(0)];
    // CATCHUP stays off here: the test runs catch-up itself, at the moment it chooses.
    const config = loadSchedulerConfig({ NATS_URL, NATS_STREAM: `SPEC_CATCHUP_RESTART_${id}`.toUpperCase(), NATS_SUBJECT_PREFIX: `spec_catchup_restart_${id}.`, SCHEDULE: '@daily', START_DATE: d3 });
    const jsm = await jetstreamManager(nc);
    await ensureStream(jsm, config.nats);
    const js = jetstream(nc);
    const lines: string[] = [];
    const collect = (message: unknown) => void lines.push(String(message));
    const logged = async (what: string, match: (line: string) => boolean, since = 0) => {
      const deadline = Date.now() + 10_000;
      while (!lines.slice(since).some(match)) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; log:\n${lines.join('\n')}`);
        await sleep(50);
      }
    };
    let app: INestApplication | undefined;
    let stop = new AbortController();
    let caughtUp: Promise<void> = Promise.resolve();
    const start = async () => {
      const moduleRef = await Test.createTestingModule({ imports: [SchedulerModule.forRoot(config)] }).compile();
      moduleRef.useLogger({ log: collect, error: collect, warn: collect, debug: () => undefined, verbose: () => undefined });
      app = moduleRef.createNestApplication();
      await app.init();
      stop = new AbortController();
      caughtUp = app.get(CatchUpService).run(stop.signal, 50);
    };
    const restart = async () => {
      stop.abort();
      await caughtUp;
      await app?.close();
      lines.push('--- restart ---');
      await start();
      return lines.length;
    };
    // The dump of `date` succeeded (no loader consumer exists: the run is over once announced).
    const ready = (date: string) => {
      const snapshotId = `${date.replaceAll('-', '')}-${randomBytes(4).toString('hex')}`;
      const table = { name: 'public.t', file: '0001_public.t.csv', rows: 1, bytes: 1, sha256: '0'.repeat(64) };
      return js.publish(`${config.nats.subjectPrefix}snapshot.ready`, JSON.stringify({ snapshotId, date, location: `/tmp/prod_snapshot_${snapshotId}`, createdAt: new Date().toISOString(), tables: [table] }));
    };
    const triggers = async () => {
      const stored: string[] = [];
      const info = await jsm.streams.info(config.nats.stream);
      for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
        const message = await jsm.streams.getMessage(config.nats.stream, { seq }).catch(() => undefined);
        if (message?.subject === `${config.nats.subjectPrefix}replication.trigger`) stored.push(`${message.json<{ date: string }>().date} ${message.header?.get('Nats-Msg-Id')}`);
      }
      return stored;
    };
    try {
      // Down three days: catch-up works through d3..today oldest first, one run at a time.
      await start();
      await logged(`d3 (${d3}) triggered`, (line) => line.startsWith(`catch-up: triggered ${d3}`));
      await ready(d3);
      await logged(`d2 (${d2}) triggered`, (line) => line.startsWith(`catch-up: triggered ${d2}`));
      // Meanwhile today's run (its scheduled tick, or a `db-fanout trigger` by hand) dumps and succeeds.
      await js.publish(`${config.nats.subjectPrefix}replication.trigger`, JSON.stringify({ date: today }), { msgID: `scheduled:${today}T00:00:00.000Z` });
      await ready(today);

      // A deploy restarts the scheduler before d2's run finished: d2 (triggered) finishes on its own,
      // and catch-up runs d1, which it had not reached.
      let since = await restart();
      await logged('catch-up to plan d1', (line) => line.startsWith(`catching up 1 missed date(s) of @daily: ${d1} to ${d1} (last successful run: ${today}; 1 of them before it`), since);
      await logged(`d1 (${d1}) triggered`, (line) => line.startsWith(`catch-up: triggered ${d1}`), since);
      await ready(d2);
      await ready(d1);
      await logged('catch-up to finish', (line) => line === 'catch-up done', since);

      // Every date has a finished run now: a start finds nothing to catch up, and says so.
      since = await restart();
      await logged('catch-up to find nothing', (line) => line === `catch-up: nothing to catch up for @daily (last successful run: ${today})`, since);

      // Each date triggered once, catch-up's own never twice.
      expect(await triggers()).toEqual([`${d3} catchup:${d3}`, `${d2} catchup:${d2}`, `${today} scheduled:${today}T00:00:00.000Z`, `${d1} catchup:${d1}`]);
    } finally {
      stop.abort();
      await caughtUp;
      await app?.close();
      await jsm.streams.delete(config.nats.stream).catch(() => undefined);
      await jsm.streams.delete(`KV_${config.nats.stream}_RUNS`).catch(() => undefined);
    }
  }, 60_000);
});
