import { Inject, Injectable, Logger, OnApplicationBootstrap, OnApplicationShutdown } from '@nestjs/common';
import { SchedulerRegistry } from '@nestjs/schedule';
import { CronJob } from 'cron';
import { type SchedulerConfig } from '@app/common/config';
import { dateInTimeZone, SUBJECTS, type TriggerPayload } from '@app/common/contract';
import { EventPublisher } from '@app/common/messaging';
import { errorMessage, MetricsService } from '@app/common/observability';
import { missedDays } from './catch-up';
import { RunLedgerService } from './run-ledger/run-ledger.service';
import { SCHEDULER_CONFIG } from './scheduler.constants';

/** The trigger for one scheduled fire time, and the message id that makes it happen once. */
export function scheduledTrigger(fireTime: Date, config: Pick<SchedulerConfig, 'timeZone' | 'startDate'>): { payload: TriggerPayload; msgID: string } | undefined {
  const date = dateInTimeZone(fireTime, config.timeZone);
  if (date < config.startDate) return undefined;
  // One id per scheduled fire time: every scheduler running publishes the same id for the same
  // tick, and the stream keeps one. A schedule firing several times a day gets one per tick.
  return { payload: { date }, msgID: `scheduled:${fireTime.toISOString()}` };
}

/** Fires the daily trigger on SCHEDULE in SCHEDULE_TIMEZONE (no backfill of missed days). */
@Injectable()
export class TriggerScheduler implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger('Scheduler');
  private job?: CronJob;
  private nextFire?: Date;

  constructor(
    @Inject(SCHEDULER_CONFIG) private readonly config: SchedulerConfig,
    private readonly events: EventPublisher,
    private readonly registry: SchedulerRegistry,
    private readonly metrics: MetricsService,
    private readonly ledger: RunLedgerService,
  ) {}

  private readonly stopped = new AbortController();

  onApplicationBootstrap(): void {
    this.job = CronJob.from({
      cronTime: this.config.schedule,
      timeZone: this.config.timeZone,
      onTick: () => void this.onTick(),
      start: true,
    });
    this.registry.addCronJob('replication-trigger', this.job);
    this.nextFire = this.job.nextDate().toJSDate();
    this.logger.log(`schedule ${this.config.schedule} (${this.config.timeZone}); next trigger at ${this.nextFire.toISOString()}`);
    if (this.config.catchup) void this.catchUp();
  }

  onApplicationShutdown(): void {
    this.stopped.abort();
  }

  /** CATCHUP=true: every missed day, oldest first, each started only when the previous run is over. */
  private async catchUp(): Promise<void> {
    try {
      const lastSuccess = await this.ledger.lastSuccessfulDate();
      const days = missedDays({ schedule: this.config.schedule, timeZone: this.config.timeZone, startDate: this.config.startDate, lastSuccess });
      if (!days.length) return;
      this.logger.log(`catching up ${days.length} missed day(s): ${days[0]} to ${days[days.length - 1]} (last successful run: ${lastSuccess ?? 'none'})`);
      for (const date of days) {
        if (this.stopped.signal.aborted) return;
        // One id per day: two schedulers catching up at once trigger each day once.
        await this.events.publish(SUBJECTS.trigger, { date }, `catchup:${date}`);
        this.metrics.triggers.inc({ result: 'published' });
        this.logger.log(`catch-up: triggered ${date}, waiting for the run to finish`);
        await this.ledger.waitUntilFinished(date, this.stopped.signal);
      }
    } catch (error) {
      this.logger.error(`catch-up stopped: ${errorMessage(error)}`);
    }
  }

  private async onTick(): Promise<void> {
    // The nominal fire time, not "now": every scheduler agrees on it to the millisecond.
    const fireTime = this.nextFire ?? new Date();
    this.nextFire = this.job?.nextDate().toJSDate();
    await this.fire(fireTime);
  }

  async fire(fireTime: Date): Promise<void> {
    const trigger = scheduledTrigger(fireTime, this.config);
    if (!trigger) {
      this.logger.log(`no trigger for ${fireTime.toISOString()}: before START_DATE ${this.config.startDate}`);
      this.metrics.triggers.inc({ result: 'skipped' });
      return;
    }
    try {
      await this.events.publish(SUBJECTS.trigger, trigger.payload, trigger.msgID);
      this.logger.log(`triggered replication for ${trigger.payload.date} (${trigger.msgID})`);
      this.metrics.triggers.inc({ result: 'published' });
    } catch (error) {
      this.logger.error(`could not publish the trigger for ${trigger.payload.date}: ${errorMessage(error)}`);
      this.metrics.triggers.inc({ result: 'failed' });
    }
  }
}
