import { Inject, Injectable, Logger } from '@nestjs/common';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { setTimeout as sleep } from 'node:timers/promises';
import { type SchedulerConfig } from '@app/common/config';
import { dateInTimeZone, SUBJECTS } from '@app/common/contract';
import { EventPublisher, NATS_CONNECTION } from '@app/common/messaging';
import { errorMessage, MetricsService } from '@app/common/observability';
import { catchUpDates, isRun, runIsOver } from './catch-up';
import { RunLedgerService } from './run-ledger/run-ledger.service';
import type { RunRecord } from './run-ledger/run-record';
import { SCHEDULER_CONFIG } from './scheduler.constants';

/** Loader consumers are named `loader-<environment>` (LOADER_ENV). */
const LOADER_CONSUMER_PREFIX = 'loader-';

/**
 * CATCHUP=true: on start, the dates of the ticks missed while no scheduler ran, and the gap just
 * before the last success (catchUpDates), oldest first, one run at a time (Airflow's
 * max_active_runs=1). A date that already has a run (queued, running or finished) is not triggered
 * again; catch-up waits for it if it is not over yet.
 */
@Injectable()
export class CatchUpService {
  private readonly logger = new Logger('CatchUp');

  constructor(
    @Inject(SCHEDULER_CONFIG) private readonly config: SchedulerConfig,
    @Inject(NATS_CONNECTION) private readonly connection: NatsConnection,
    private readonly events: EventPublisher,
    private readonly metrics: MetricsService,
    private readonly ledger: RunLedgerService,
  ) {}

  async run(signal: AbortSignal, pollMs = 1_000): Promise<void> {
    try {
      // lastSuccessfulDate waits for the fold to take every stored event: the runs read next are as current.
      const lastSuccess = await this.ledger.lastSuccessfulDate(dateInTimeZone(new Date(), this.config.timeZone));
      const { schedule, timeZone, startDate } = this.config;
      const { dates, gaps } = await catchUpDates({ schedule, timeZone, startDate, lastSuccess, runs: await this.ledger.runs() });
      if (!dates.length) {
        this.logger.log(`catch-up: nothing to catch up for ${schedule} (last successful run: ${lastSuccess ?? 'none'})`);
        return;
      }
      const before = gaps ? `; ${gaps} of them before it, gaps in the run history` : '';
      this.logger.log(`catching up ${dates.length} missed date(s) of ${schedule}: ${dates[0]} to ${dates[dates.length - 1]} (last successful run: ${lastSuccess ?? 'none'}${before})`);
      for (const date of dates) {
        if (signal.aborted) return;
        const existing = await this.runOf(date);
        if (existing) {
          this.logger.log(`catch-up: ${date} already has a run (dump ${existing.dump.state}), not triggered again`);
        } else {
          // One id per date: two schedulers catching up at once trigger each date once, and only the
          // one whose publish the stream stored counts it `published` (as for scheduled ticks).
          const ack = await this.events.publish(SUBJECTS.trigger, { date }, `catchup:${date}`);
          if (ack.duplicate) {
            this.metrics.triggers.inc({ result: 'already_stored' });
            this.logger.log(`catch-up: the trigger for ${date} was stored already (another scheduler catching up, or an earlier attempt whose answer was lost): waiting for the run to finish`);
          } else {
            this.metrics.triggers.inc({ result: 'published' });
            this.logger.log(`catch-up: triggered ${date}, waiting for the run to finish`);
          }
        }
        await this.waitUntilOver(date, signal, pollMs);
      }
      if (!signal.aborted) this.logger.log('catch-up done');
    } catch (error) {
      this.logger.error(`catch-up stopped: ${errorMessage(error)}`);
    }
  }

  /** The date's run, if it was triggered (load events alone, e.g. of a reload, are no run). */
  private async runOf(date: string): Promise<RunRecord | undefined> {
    const run = (await this.ledger.runs()).find((r) => r.date === date);
    return isRun(run) ? run : undefined;
  }

  private async waitUntilOver(date: string, signal: AbortSignal, pollMs: number): Promise<void> {
    while (!signal.aborted) {
      if (runIsOver(await this.runOf(date), await this.loaderConsumers())) return;
      await sleep(pollMs, undefined, { signal }).catch(() => undefined);
    }
  }

  /** Each environment whose loader consumer exists on the stream now, with when it was created. */
  private async loaderConsumers(): Promise<Map<string, string>> {
    const jsm = await jetstreamManager(this.connection);
    const environments = new Map<string, string>();
    const snapshots = `${this.config.nats.subjectPrefix}${SUBJECTS.snapshotReady}`;
    for await (const consumer of jsm.consumers.list(this.config.nats.stream)) {
      // `loader-<env>` on snapshot.ready; the same loader's `loader-<env>-reload` takes requests, not snapshots.
      if (consumer.name.startsWith(LOADER_CONSUMER_PREFIX) && consumer.config.filter_subject === snapshots) {
        environments.set(consumer.name.slice(LOADER_CONSUMER_PREFIX.length), consumer.created);
      }
    }
    return environments;
  }
}
