import { Inject, Injectable, Logger, OnApplicationBootstrap, OnApplicationShutdown } from '@nestjs/common';
import { SchedulerRegistry } from '@nestjs/schedule';
import { jetstream, type JetStreamClient } from '@nats-io/jetstream';
import { headers, type NatsConnection } from '@nats-io/transport-node';
import { CronJob, type CronTime } from 'cron';
import { DateTime } from 'luxon';
import { Gauge } from 'prom-client';
import { setTimeout as sleep } from 'node:timers/promises';
import { type SchedulerConfig } from '@app/common/config';
import { dateInTimeZone, SUBJECTS, type TriggerPayload } from '@app/common/contract';
import { NATS_CONNECTION } from '@app/common/messaging';
import { errorMessage, MetricsService, ReadinessService } from '@app/common/observability';
import { CatchUpService } from './catch-up.service';
import { nextFireTime, tickDate } from './schedule-ticks';
import { SCHEDULER_CONFIG } from './scheduler.constants';
import { lastStoredTick, SCHEDULE_HEADER, scheduleLabel, storedTriggerIds, triggerStored } from './stored-trigger';

/** The trigger for one scheduled fire time, and the message id that makes it happen once. */
export function scheduledTrigger(
  fireTime: Date,
  config: Pick<SchedulerConfig, 'timeZone' | 'startDate'>,
  date = dateInTimeZone(fireTime, config.timeZone),
): { payload: TriggerPayload; msgID: string } | undefined {
  if (date < config.startDate) return undefined;
  // One id per scheduled fire time: every scheduler running publishes the same id for the same
  // tick, and the stream keeps one. A schedule firing several times a day gets one per tick.
  return { payload: { date }, msgID: `scheduled:${fireTime.toISOString()}` };
}

/**
 * The tick due at `now`: the latest fire time of the schedule from `nextFire` up to `now`, and the
 * fire time after it; no tick when `nextFire` is still to come. The fire times before it that were
 * missed meanwhile (the process paused or busy, its clock stepped) are `skipped`: only the latest
 * runs, as cron's own ticks collapse, and the caller names each one given up. `now` is read from
 * cron's own clock (luxon's), which decided to call.
 */
export function dueTick(cronTime: CronTime, timeZone: string, nextFire: Date, now: Date): { due?: Date; next: Date; skipped: Date[] } {
  let due: Date | undefined;
  let next = nextFire;
  const skipped: Date[] = [];
  while (next.getTime() <= now.getTime()) {
    if (due) skipped.push(due);
    due = next;
    next = nextFireTime(cronTime, timeZone, due);
  }
  return { due, next, skipped };
}

/** Waits between publish attempts of one tick: 1 s, 2 s, 4 s... at most 30 s. */
export function retryDelayMs(attempt: number): number {
  return Math.min(1_000 * 2 ** (attempt - 1), 30_000);
}

/** Resolves when `signal` aborts. */
function abortion(signal: AbortSignal): Promise<'aborted'> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve('aborted');
    else signal.addEventListener('abort', () => resolve('aborted'), { once: true });
  });
}

/** Why a tick's retries stopped: a later tick fired. */
class TickOverError extends Error {}

/** How long one publish may wait for the stream's ack. */
const PUBLISH_TIMEOUT_MS = 5_000;
/** Ticks missed in one pause that are named one line each (the latest); earlier ones are summed up in one line. */
const MISSED_TICKS_NAMED = 10;

/**
 * A first attempt this soon after its fire time needs no look-up: the stream's duplicate window
 * (2 minutes) still drops a copy that another scheduler stored. Later attempts look first.
 */
const ON_TIME_MS = 30_000;

/**
 * Fires the trigger on SCHEDULE in SCHEDULE_TIMEZONE. Each tick's trigger is published under the
 * tick's message id and retried until the stream has stored it, however long the broker is away
 * (each retry first looks whether it is stored already: the stream's duplicate window is shorter),
 * until the next tick comes: then that tick is given up, loudly (log and
 * `db_fanout_triggers_total{result="failed"}`), and the next one takes over.
 */
@Injectable()
export class TriggerScheduler implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger('Scheduler');
  private readonly js: JetStreamClient;
  private job?: CronJob;
  private nextFire?: Date;
  private recalled: Promise<void> = Promise.resolve();
  /** The tick still being published: the next tick stops it. */
  private pending?: AbortController;
  private readonly stopped = new AbortController();
  private lastPublished?: Date;
  private readonly lastPublishedGauge: Gauge;

  constructor(
    @Inject(SCHEDULER_CONFIG) private readonly config: SchedulerConfig,
    @Inject(NATS_CONNECTION) private readonly connection: NatsConnection,
    private readonly registry: SchedulerRegistry,
    private readonly metrics: MetricsService,
    private readonly readiness: ReadinessService,
    private readonly catchUp: CatchUpService,
  ) {
    this.js = jetstream(connection);
    this.lastPublishedGauge = new Gauge({
      name: 'db_fanout_last_trigger_published_timestamp_seconds',
      help: 'Fire time of the latest scheduled tick whose trigger the stream has stored.',
      // Joins the registry with its first value (recordPublished): 0 would read as 1970.
      registers: [],
    });
  }

  onApplicationBootstrap(): void {
    this.job = CronJob.from({
      cronTime: this.config.schedule,
      timeZone: this.config.timeZone,
      onTick: () => void this.onTick(),
      start: false,
    });
    this.registry.addCronJob('replication-trigger', this.job);
    // Known before the job starts: start() itself may call onTick (see onTick).
    const startedAt = DateTime.now().toJSDate();
    this.nextFire = nextFireTime(this.job.cronTime, this.config.timeZone, startedAt);
    this.job.start();
    this.logger.log(`schedule ${this.config.schedule} (${this.config.timeZone}); next trigger at ${this.nextFire.toISOString()}`);
    this.reportSchedule();
    this.recalled = this.recallLastTick(startedAt, this.nextFire);
    if (this.config.catchup) void this.catchUp.run(this.stopped.signal);
  }

  /**
   * Resolves once the start's look at the stream is over: the last stored tick read and, if a tick
   * passed while no scheduler ran, that tick's trigger stored or given up (recallLastTick).
   */
  whenStarted(): Promise<void> {
    return this.recalled;
  }

  /**
   * The last tick an earlier run of the scheduler stored, for /health and the metric, and the ticks
   * after it whose time passed while no scheduler ran (this one stopped across them: a deploy at
   * midnight, a crash): as after a pause, the latest of them runs now, late, and each one before it
   * is given up by name (reportMissed). With CATCHUP=true catch-up runs the missed dates instead.
   * Best effort: a stream that cannot be read leaves it to the next tick.
   */
  private async recallLastTick(startedAt: Date, firstScheduled: Date): Promise<void> {
    let stored: Awaited<ReturnType<typeof lastStoredTick>>;
    try {
      stored = await lastStoredTick(this.connection, this.config);
    } catch (error) {
      this.logger.warn(`could not read the last stored trigger (the next tick sets it, and no tick missed while the scheduler was stopped runs): ${errorMessage(error)}`);
      return;
    }
    if (!stored) return;
    const tick = stored.fireTime;
    this.recordPublished(tick);
    if (this.config.catchup || !this.job) return;
    // Fired under another SCHEDULE or SCHEDULE_TIMEZONE (changed since): the new schedule's ticks
    // since then were never due while a scheduler ran the old one, so none is missed; its next tick
    // is its first. A trigger without the header (an older scheduler's) counts as the current
    // schedule's when its time is one of the current schedule's fire times.
    const current = scheduleLabel(this.config);
    const onSchedule = nextFireTime(this.job.cronTime, this.config.timeZone, new Date(tick.getTime() - 1)).getTime() === tick.getTime();
    if ((stored.schedule ?? (onSchedule ? current : undefined)) !== current) {
      this.logger.log(`the last stored tick (${tick.toISOString()}) was fired under ${stored.schedule ?? 'another schedule'}, not ${current}: no tick of this one counts as missed`);
      return;
    }
    const { due, skipped } = dueTick(this.job.cronTime, this.config.timeZone, nextFireTime(this.job.cronTime, this.config.timeZone, tick), startedAt);
    // Once the schedule's own next tick has fired (the read was slow), an older one must not end its publish.
    if (!due || this.nextFire !== firstScheduled || this.stopped.signal.aborted) return;
    this.logger.log(
      `the tick at ${due.toISOString()} passed while no scheduler was running (the last stored is ${tick.toISOString()}): running it now; only the latest missed tick runs (CATCHUP=true runs every missed date)`,
    );
    const reported = skipped.length ? this.reportMissed(skipped, due) : Promise.resolve();
    await this.fire(due);
    await reported;
  }

  onApplicationShutdown(): void {
    this.stopped.abort();
    this.pending?.abort(new Error('the scheduler is stopping'));
  }

  /**
   * Fires the tick that is due, under its nominal fire time (not "now": every scheduler agrees on it
   * to the millisecond), counted from the schedule rather than from cron's calls. On a busy machine
   * cron calls twice for one tick: when the whole second passes between the two clock reads of its
   * start() (which its timer's callback runs before calling for the tick it woke for), start() calls
   * at once for the next tick too. Taking the next fire time from those calls labelled ticks with the
   * wrong time, and a call during the job's first start() (before any fire time was known) with
   * "now", a message id that two schedulers do not share.
   */
  private async onTick(): Promise<void> {
    if (!this.job || !this.nextFire) return;
    const { due, next, skipped } = dueTick(this.job.cronTime, this.config.timeZone, this.nextFire, DateTime.now().toJSDate());
    this.nextFire = next;
    if (!due) return; // the second call for a tick already fired
    this.reportSchedule();
    // Beside the due tick's publish, which must not wait for the look-up.
    const reported = skipped.length ? this.reportMissed(skipped, due) : Promise.resolve();
    await this.fire(due);
    await reported;
  }

  /**
   * Ticks whose time passed while the scheduler did not run (the process paused or stopped, its
   * clock stepped): only the latest tick due runs (no catch-up). Each one before it that the stream
   * does not hold (another scheduler may have stored it meanwhile: one read for them all) is given
   * up loudly, as a tick whose trigger was not stored when the next came is; one the stream holds is
   * counted `already_stored`. A long pause on a fast schedule names its latest MISSED_TICKS_NAMED
   * ticks and sums up the rest in one line.
   */
  async reportMissed(skipped: Date[], due: Date): Promise<void> {
    const wanted = skipped.flatMap((fireTime) => {
      const trigger = this.triggerOfTick(fireTime);
      return trigger ? [{ fireTime, ...trigger }] : [];
    });
    if (!wanted.length) return;
    let stored = new Set<string>();
    let unread = '';
    try {
      stored = await storedTriggerIds(this.connection, this.config, wanted[0].fireTime);
    } catch (error) {
      unread = ` (the stream could not be read to look for another scheduler's: ${errorMessage(error)})`;
    }
    const lost = wanted.filter((t) => !stored.has(t.msgID));
    for (const t of wanted.filter((t) => stored.has(t.msgID))) {
      this.logger.log(`the trigger for ${t.payload.date} (${t.msgID}), missed while this scheduler was not running, is in the stream already (another scheduler's)`);
      this.metrics.triggers.inc({ result: 'already_stored' });
    }
    const unnamed = lost.slice(0, Math.max(0, lost.length - MISSED_TICKS_NAMED));
    if (unnamed.length) {
      this.logger.error(
        `gave up on ${unnamed.length} triggers from ${unnamed[0].fireTime.toISOString()} to ${unnamed[unnamed.length - 1].fireTime.toISOString()}: the scheduler was not running at their times${unread}; ` +
          `the latest ${MISSED_TICKS_NAMED} are named below`,
      );
    }
    for (const { payload, msgID } of lost.slice(unnamed.length)) {
      this.logger.error(
        `gave up on the trigger for ${payload.date} (${msgID}): the scheduler was not running at its time (paused, stopped, or its clock stepped), ` +
          `and the next tick (${due.toISOString()}) has come${unread}; this tick's run happens only when ` +
          `triggered by hand (db-fanout trigger --date ${payload.date}) or by catch-up (CATCHUP=true)`,
      );
    }
    for (let i = 0; i < lost.length; i++) this.metrics.triggers.inc({ result: 'failed' });
  }

  /**
   * The trigger of the tick at `fireTime`, for the date of the wall-clock tick (a tick that clocks
   * skipped fires when the gap ends, maybe the next day); none, logged and counted `skipped`, for a
   * date before START_DATE.
   */
  private triggerOfTick(fireTime: Date): ReturnType<typeof scheduledTrigger> {
    const trigger = scheduledTrigger(fireTime, this.config, this.job ? tickDate(this.job.cronTime, this.config.timeZone, fireTime) : undefined);
    if (!trigger) {
      this.logger.log(`no trigger for ${fireTime.toISOString()}: before START_DATE ${this.config.startDate}`);
      this.metrics.triggers.inc({ result: 'skipped' });
    }
    return trigger;
  }

  /**
   * Publishes the trigger of the tick at `fireTime`, retrying until it is stored, or until the next
   * tick fires (or the app stops). Resolves with what became of it: `published` once the stream
   * holds it, whoever stored it (the metric tells this scheduler's publishes from the others).
   */
  async fire(fireTime: Date): Promise<'published' | 'skipped' | 'failed'> {
    this.pending?.abort(new TickOverError(`the next tick (${fireTime.toISOString()}) has come`));
    const trigger = this.triggerOfTick(fireTime);
    if (!trigger) return 'skipped';
    const tick = new AbortController();
    this.pending = tick;
    const subject = `${this.config.nats.subjectPrefix}${SUBJECTS.trigger}`;
    const { date } = trigger.payload;
    let lastError: unknown;
    for (let attempt = 1; !tick.signal.aborted; attempt++) {
      try {
        if ((attempt > 1 || Date.now() - fireTime.getTime() > ON_TIME_MS) && (await this.storedAlready(trigger.msgID, fireTime, tick.signal))) {
          if (tick.signal.aborted) break;
          this.logger.log(`the trigger for ${date} (${trigger.msgID}) is in the stream already (another scheduler's, or an earlier attempt whose answer was lost): not publishing it again`);
          return this.stored(fireTime, tick, 'already_stored');
        }
        if (tick.signal.aborted) break;
        // The same message id on every attempt: within the stream's duplicate window an attempt whose
        // ack was lost but which was stored is not stored twice; after it, the look-up above is what keeps it once.
        // The schedule that fired it: a scheduler started under another schedule counts no tick as missed (recallLastTick).
        const scheduleHeader = headers();
        scheduleHeader.set(SCHEDULE_HEADER, scheduleLabel(this.config));
        const publish = this.js.publish(subject, JSON.stringify(trigger.payload), { msgID: trigger.msgID, timeout: PUBLISH_TIMEOUT_MS, headers: scheduleHeader });
        // The next tick ends this one at once, even with a publish still waiting for its answer.
        const ack = await Promise.race([publish, abortion(tick.signal)]);
        if (ack === 'aborted') {
          publish.catch(() => undefined);
          break;
        }
        if (ack.duplicate) {
          // Within the duplicate window the stream keeps the first copy of an id and drops this one.
          this.logger.log(`the trigger for ${date} (${trigger.msgID}) was stored already (another scheduler's, or an earlier attempt's whose answer was lost): the stream kept that one`);
          return this.stored(fireTime, tick, 'already_stored');
        }
        this.logger.log(`triggered replication for ${date} (${trigger.msgID})${attempt > 1 ? ` on attempt ${attempt}` : ''}`);
        return this.stored(fireTime, tick, 'published');
      } catch (error) {
        lastError = error;
        if (tick.signal.aborted) break;
        const waitMs = retryDelayMs(attempt);
        this.logger.warn(`could not publish the trigger for ${date} (${trigger.msgID}, attempt ${attempt}), retrying in ${waitMs}ms: ${errorMessage(error)}`);
        await sleep(waitMs, undefined, { signal: tick.signal }).catch(() => undefined);
      }
    }
    const reason: unknown = tick.signal.reason;
    const why = reason instanceof TickOverError ? reason.message : 'the scheduler is stopping';
    const last = lastError === undefined ? 'its publish had no answer yet' : `last error: ${errorMessage(lastError)}`;
    this.logger.error(
      `gave up on the trigger for ${date} (${trigger.msgID}): not confirmed stored, and ${why}; ` +
        `unless it was stored after all, this tick's run happens only when triggered by hand or by catch-up (${last})`,
    );
    this.metrics.triggers.inc({ result: 'failed' });
    return 'failed';
  }

  /**
   * The stream holds the tick's trigger: `published` by this publish, or `already_stored` (another
   * scheduler's, or an earlier attempt of this one whose answer was lost), so that with several
   * schedulers a tick counts as published at most once across them (not at all when the attempt
   * that stored it lost its answer).
   */
  private stored(fireTime: Date, tick: AbortController, result: 'published' | 'already_stored'): 'published' {
    this.metrics.triggers.inc({ result });
    this.recordPublished(fireTime);
    if (this.pending === tick) this.pending = undefined;
    return 'published';
  }

  /** triggerStored, given up (as not stored) when the next tick comes first. */
  private async storedAlready(msgID: string, fireTime: Date, signal: AbortSignal): Promise<boolean> {
    const lookUp = triggerStored(this.connection, this.config, msgID, fireTime);
    const answer = await Promise.race([lookUp, abortion(signal)]);
    if (answer === 'aborted') {
      lookUp.catch(() => undefined);
      return false;
    }
    return answer;
  }

  private recordPublished(fireTime: Date): void {
    if (this.lastPublished && this.lastPublished >= fireTime) return;
    this.lastPublished = fireTime;
    this.metrics.registerWithFirstValue(this.lastPublishedGauge);
    this.lastPublishedGauge.set(fireTime.getTime() / 1000);
    this.reportSchedule();
  }

  /** /health shows the schedule: the last tick whose trigger was stored, and the next one. */
  private reportSchedule(): void {
    const last = this.lastPublished ? `last trigger published for the tick at ${this.lastPublished.toISOString()}` : 'no trigger published yet';
    this.readiness.set('schedule', true, `${last}; next tick at ${this.nextFire?.toISOString() ?? 'none'}`);
  }
}
