import { Test } from '@nestjs/testing';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { DateTime } from 'luxon';
import { loadSchedulerConfig } from '@app/common/config';
import { ensureStream, EventPublisher } from '@app/common/messaging';
import { MetricsService } from '@app/common/observability';
import { CatchUpService } from './catch-up.service';
import { SchedulerModule } from './scheduler.module';
import { NATS_URL, pipelineBuckets } from '../../../test/support/nats';


describe('CatchUpService (real NATS)', () => {
  const id = randomBytes(4).toString('hex');
  let nc: NatsConnection;

  beforeAll(async () => {
    nc = await connect({ servers: NATS_URL });
  });
  afterAll(() => nc.close());

  it('counts a date another scheduler stored first `already_stored`, not `published`: each date counts published at most once', async () => {
    const yesterday = DateTime.now().setZone('UTC').minus({ days: 1 }).toISODate()!;
    // CATCHUP stays off here: the test runs catch-up itself, at the moment it chooses.
    const config = loadSchedulerConfig({ NATS_URL, NATS_STREAM: `SPEC_CATCHUP_${id}`.toUpperCase(), NATS_SUBJECT_PREFIX: `spec_catchup_${id}.`, SCHEDULE: '@daily', START_DATE: yesterday });
    await ensureStream(await jetstreamManager(nc), config.nats);
    const lines: string[] = [];
    const collect = (message: unknown) => void lines.push(String(message));
    const moduleRef = await Test.createTestingModule({ imports: [SchedulerModule.forRoot(config)] }).compile();
    moduleRef.useLogger({ log: collect, error: collect, warn: collect, debug: () => undefined, verbose: () => undefined });
    const app = moduleRef.createNestApplication();
    await app.init();
    const stop = new AbortController();
    try {
      // Two schedulers catching up at once: both found no run of the date, and the other one's
      // trigger reaches the stream just before this one's publish (the same message id).
      const events = app.get(EventPublisher);
      const publish = events.publish.bind(events);
      jest.spyOn(events, 'publish').mockImplementationOnce(async (...args: Parameters<EventPublisher['publish']>) => {
        await jetstream(nc).publish(`${config.nats.subjectPrefix}replication.trigger`, JSON.stringify({ date: yesterday }), { msgID: `catchup:${yesterday}` });
        return publish(...args);
      });
      const caughtUp = app.get(CatchUpService).run(stop.signal, 50);
      const deadline = Date.now() + 10_000;
      while (!lines.some((line) => line.includes(`catch-up: the trigger for ${yesterday} was stored already`)) && Date.now() < deadline) await sleep(50);
      stop.abort();
      await caughtUp;

      expect(lines).toContainEqual(
        `catch-up: the trigger for ${yesterday} was stored already (another scheduler catching up, or an earlier attempt whose answer was lost): waiting for the run to finish`,
      );
      expect(lines.some((line) => line.startsWith(`catch-up: triggered ${yesterday}`))).toBe(false);
      const counted = await app.get(MetricsService).registry.getSingleMetricAsString('db_fanout_triggers_total');
      expect(counted).toContain('db_fanout_triggers_total{result="already_stored"} 1');
      expect(counted).not.toContain('result="published"');
      // The stream holds the date's trigger once.
      expect((await (await jetstreamManager(nc)).streams.info(config.nats.stream)).state.messages).toBe(1);
    } finally {
      stop.abort();
      await app.close();
      await (await jetstreamManager(nc)).streams.delete(config.nats.stream).catch(() => undefined);
      for (const bucket of pipelineBuckets(config.nats.stream)) await (await jetstreamManager(nc)).streams.delete(`KV_${bucket}`).catch(() => undefined);
    }
  });
});
