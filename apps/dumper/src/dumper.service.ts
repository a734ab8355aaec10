import { type BeforeApplicationShutdown, Inject, Injectable, Logger } from '@nestjs/common';
import { type DumperConfig, formatDuration } from '@app/common/config';
import { dateInTimeZone, type DumpStartedPayload, InvalidMessageError, type SnapshotFailedPayload, type SnapshotReadyPayload, snapshotInstant, SUBJECTS, type TriggerPayload } from '@app/common/contract';
import { NATS_CONNECTION, EventPublisher } from '@app/common/messaging';
import { describeFailure, errorMessage, type Failure, MetricsService, withLogContext } from '@app/common/observability';
import { RetriesExhaustedError, withRetry } from '@app/common/resilience';
import { loadRulesFile } from '@app/common/rules';
import type { NatsConnection } from '@nats-io/transport-node';
import { dumpEventIds, type TriggerRef } from './dump-event-ids';
import type { SnapshotStore } from '@app/common/snapshot-store';
import { DUMPER_CONFIG, SNAPSHOT_STORE } from './dumper.constants';
import { announceOnce, snapshotAnnouncedFor } from './earlier-announcement';
import { applyRetention } from './retention';
import { forgetSnapshot, recordWritten } from './snapshot-records';
import { writeSnapshot } from './snapshot-writer';
import { SourceDatabase } from './source-database';

export type DumpOutcome = { status: 'ready'; snapshot: SnapshotReadyPayload } | { status: 'failed'; error: string; attempts: number };

@Injectable()
export class DumperService implements BeforeApplicationShutdown {
  private readonly logger = new Logger('Dumper');
  /** The retention runs after dumps, one at a time; never part of a trigger's handling (see dumpInContext). */
  private retention: Promise<void> = Promise.resolve();

  constructor(
    @Inject(DUMPER_CONFIG) private readonly config: DumperConfig,
    private readonly events: EventPublisher,
    private readonly metrics: MetricsService,
    @Inject(NATS_CONNECTION) private readonly connection: NatsConnection,
    private readonly source: SourceDatabase,
    @Inject(SNAPSHOT_STORE) private readonly store: SnapshotStore,
  ) {}

  /**
   * What a failure event says: the SQLSTATE or our own code, and no row values (PostgreSQL's DETAIL,
   * a data exception's quoted input) unless ERROR_DETAIL=true.
   */
  describe(error: unknown): Failure {
    return describeFailure(error, { detail: this.config.errorDetail });
  }

  /**
   * Publishes snapshot.failed once per trigger: the dump of `date` gave up. `signal`: see
   * EventPublisher.publish (begun after a stop, the report gets one try).
   */
  async reportFailure(date: string, trigger: TriggerRef, failure: Failure, attempts: number, signal?: AbortSignal): Promise<void> {
    this.metrics.dumps.inc({ result: 'failed' });
    this.logger.error(`dump of ${date} failed after ${attempts} attempt(s)${failure.code ? ` (${failure.code})` : ''}: ${failure.error}`);
    const event: SnapshotFailedPayload = { date, error: failure.error, ...(failure.code ? { code: failure.code } : {}), attempts };
    await this.events.publish(SUBJECTS.snapshotFailed, event, dumpEventIds.failed(date, trigger), { signal });
  }

  /** A retention run still going finishes before the broker connection is closed. */
  async beforeApplicationShutdown(): Promise<void> {
    await this.retention;
  }

  /** SNAPSHOT_RETENTION after each dump; a failure here is logged, the new snapshot is announced anyway. */
  private async removeExpiredSnapshots(): Promise<void> {
    try {
      const { removed, keptInUse, leftovers, notAnnounced } = await applyRetention(this.connection, this.config.nats, this.store, this.config.snapshotRetentionMs);
      if (removed.length) this.logger.log(`retention removed ${removed.join(', ')}`);
      if (leftovers.length) this.logger.log(`retention, leftovers of interrupted uploads: ${leftovers.join('; ')}`);
      if (keptInUse.length) this.logger.log(`retention kept ${keptInUse.join(', ')}: an environment has not loaded it yet`);
      if (notAnnounced.length) this.logger.log(`retention left alone ${notAnnounced.join(', ')}: not written nor announced by this stream (another pipeline's, or put there by hand)`);
    } catch (error) {
      this.logger.warn(`retention failed: ${errorMessage(error)}`);
    }
  }

  /** snapshot.dump.started, best effort: history and dashboards, never a reason to fail a dump. */
  private async announceStart(date: string, trigger: TriggerRef, attempt: number, signal?: AbortSignal): Promise<void> {
    const event: DumpStartedPayload = { date, attempt, delivery: trigger.delivery, startedAt: new Date().toISOString() };
    await this.events
      .publish(SUBJECTS.dumpStarted, event, dumpEventIds.started(date, trigger, attempt), { signal })
      .catch((error: unknown) => this.logger.warn(`could not announce the start of the dump of ${date}: ${errorMessage(error)}`));
  }

  /** The date a trigger asks for: its own, or today in SCHEDULE_TIMEZONE; never before START_DATE. */
  resolveDate(trigger: TriggerPayload, now = new Date()): string {
    const date = trigger.date ?? dateInTimeZone(now, this.config.timeZone);
    if (date < this.config.startDate) {
      throw new InvalidMessageError(`trigger date ${date} is before START_DATE ${this.config.startDate}`);
    }
    return date;
  }

  /**
   * Dumps one date, retrying transient failures, and announces the outcome: `snapshot.ready` on
   * success, `snapshot.failed` once the retries are spent. Rejects only when the outcome could not
   * be announced, so the trigger stays unacked and is delivered again.
   */
  async dump(date: string, trigger: TriggerRef, signal?: AbortSignal): Promise<DumpOutcome> {
    return withLogContext({ date }, () => this.dumpInContext(date, trigger, signal));
  }

  private async dumpInContext(date: string, trigger: TriggerRef, signal?: AbortSignal): Promise<DumpOutcome> {
    const started = Date.now();
    const earlier = await snapshotAnnouncedFor(this.connection, this.config.nats, date, trigger);
    if (earlier) {
      this.logger.log(`trigger #${trigger.seq} (delivery ${trigger.delivery}) was answered already: snapshot ${earlier.snapshotId} is announced; not dumping ${date} again`);
      return { status: 'ready', snapshot: earlier };
    }
    this.logger.log(`dumping ${date} to the ${this.store.kind} snapshot store`);
    try {
      const { result, attempts } = await withRetry(
        this.config.retry,
        async (attempt) => {
          await this.announceStart(date, trigger, attempt, signal);
          return writeSnapshot({
            date,
            source: this.source,
            store: this.store,
            snapshotDir: this.config.snapshotDir,
            compression: this.config.snapshotCompression,
            tables: this.config.tables,
            excludeTables: this.config.excludeTables,
            jobs: this.config.dumpJobs,
            // Read at every dump: an edited rules file applies to the next dump; a broken one fails it, named.
            rules: this.config.rulesFile ? loadRulesFile(this.config.rulesFile) : undefined,
            maskingKey: this.config.maskingKey,
            log: (line) => this.logger.log(line),
            // Best effort: unrecorded, a snapshot never announced stays in the store (retention leaves it alone).
            beforeCommit: (snapshotId) =>
              recordWritten(this.connection, this.config.nats, snapshotId).catch((error: unknown) =>
                this.logger.warn(`could not record snapshot ${snapshotId} as written: ${errorMessage(error)}`),
              ),
            // Its manifest failed and the snapshot is gone: no record of it stays behind.
            afterAbort: (snapshotId) => forgetSnapshot(this.connection, this.config.nats, snapshotId),
            // A stop ends the attempt at once (sessions closed, locks on production released, upload
            // aborted) rather than letting it run on to the orchestrator's SIGKILL; withRetry sees the
            // stop and gives up, and the controller hands the trigger back (or, on its last delivery,
            // reports it: stopped-on-last-delivery).
            signal,
            onStop: () =>
              this.logger.warn(
                `SIGTERM during the dump of ${date}: this attempt ends, the trigger is handed back (on its last delivery, reported as stopped-on-last-delivery)`,
              ),
          });
        },
        (attempt, error, delayMs) => {
          this.metrics.dumpRetries.inc();
          const failure = this.describe(error);
          void this.events
            .publish(SUBJECTS.dumpRetrying, { date, attempt, delivery: trigger.delivery, ...failure, retryInMs: delayMs }, dumpEventIds.retrying(date, trigger, attempt), { signal })
            .catch((publishError: unknown) => this.logger.warn(`could not announce the retry: ${errorMessage(publishError)}`));
          this.logger.warn(`dump of ${date} failed on attempt ${attempt}, retrying in ${formatDuration(delayMs)}: ${failure.error}`);
        },
        signal,
      );
      const { manifest, location } = result;
      const snapshot: SnapshotReadyPayload = {
        snapshotId: manifest.snapshotId,
        date,
        location,
        createdAt: manifest.createdAt,
        takenAt: manifest.takenAt,
        tables: manifest.tables.map(({ name, file, rows, bytes, sha256 }) => ({ name, file, rows, bytes, sha256 })),
      };
      const answer = await announceOnce(snapshot, trigger, { connection: this.connection, nats: this.config.nats, events: this.events, store: this.store, log: (line) => this.logger.log(line), signal });
      if (answer !== snapshot) return { status: 'ready', snapshot: answer };
      const rows = snapshot.tables.reduce((sum, t) => sum + t.rows, 0);
      this.metrics.dumps.inc({ result: 'success' });
      this.metrics.dumpRows.inc(rows);
      this.metrics.dumpBytes.inc(snapshot.tables.reduce((sum, t) => sum + t.bytes, 0));
      this.metrics.dumpDuration.observe((Date.now() - started) / 1000);
      this.metrics.recordSnapshotTaken(snapshotInstant(snapshot));
      this.logger.log(`snapshot ${snapshot.snapshotId} ready: ${snapshot.tables.length} tables, ${rows} rows in ${Date.now() - started}ms (attempts: ${attempts})`);
      // Retention runs after the trigger is answered: its ack waits only for the snapshot and its
      // announcement. Awaited here, a slow retention (seconds during a broker failover) kept the ack
      // unsent past the ack wait, and the trigger was delivered once more.
      this.retention = this.retention.then(() => this.removeExpiredSnapshots());
      return { status: 'ready', snapshot };
    } catch (error) {
      if (!(error instanceof RetriesExhaustedError) || signal?.aborted) throw error;
      const failure = this.describe(error.lastError);
      await this.reportFailure(date, trigger, failure, error.attempts, signal);
      return { status: 'failed', error: failure.error, attempts: error.attempts };
    }
  }
}
