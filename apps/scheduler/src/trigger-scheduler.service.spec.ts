import { Test } from '@nestjs/testing';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { randomBytes } from 'node:crypto';
import { loadSchedulerConfig, type SchedulerConfig } from '@app/common/config';
import { SchedulerModule } from './scheduler.module';
import { scheduledTrigger, TriggerScheduler } from './trigger-scheduler.service';

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
    await nc.close();
  });

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
});
