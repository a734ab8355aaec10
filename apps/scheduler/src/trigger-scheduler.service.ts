import { Inject, Injectable, Logger, OnApplicationBootstrap } from '@nestjs/common';
import { SchedulerRegistry } from '@nestjs/schedule';
import { CronJob } from 'cron';
import { dateInTimeZone, errorMessage, EventPublisher, MetricsService, type SchedulerConfig, SUBJECTS, type TriggerPayload } from '@app/common';
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
export class TriggerScheduler implements OnApplicationBootstrap {
  private readonly logger = new Logger('Scheduler');
  private job?: CronJob;
  private nextFire?: Date;

  constructor(
    @Inject(SCHEDULER_CONFIG) private readonly config: SchedulerConfig,
    private readonly events: EventPublisher,
    private readonly registry: SchedulerRegistry,
    private readonly metrics: MetricsService,
  ) {}

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
