import { Inject, Injectable, Logger } from '@nestjs/common';
import { formatDuration, type LoaderConfig } from '@app/common/config';
import { InvalidMessageError, type LoadStartedPayload, type SnapshotLoadedPayload, type SnapshotReadyPayload, SUBJECTS } from '@app/common/contract';
import { EventPublisher } from '@app/common/messaging';
import { errorMessage, MetricsService, withLogContext } from '@app/common/observability';
import { RetriesExhaustedError, withRetry } from '@app/common/resilience';
import { LOADER_CONFIG } from './loader.constants';
import { resolveSnapshotDir } from './snapshot-files';
import { analyzeSnapshotTables, loadSnapshot, markLoadAnnounced } from './snapshot-load';

export type LoadOutcome =
  | { status: 'loaded'; event: SnapshotLoadedPayload }
  | { status: 'superseded'; by: string }
  | { status: 'failed'; error: string; attempts: number };

@Injectable()
export class LoaderService {
  private readonly logger = new Logger(`Loader`);

  constructor(
    @Inject(LOADER_CONFIG) private readonly config: LoaderConfig,
    private readonly events: EventPublisher,
    private readonly metrics: MetricsService,
  ) {}

  /**
   * Loads a snapshot into this environment, retrying transient failures locally, and announces the
   * outcome. Rejects only when the outcome could not be announced (the message is then redelivered,
   * and the ledger makes the redelivery cheap).
   */
  async load(snapshot: SnapshotReadyPayload, signal?: AbortSignal, force = false): Promise<LoadOutcome> {
    return withLogContext({ snapshotId: snapshot.snapshotId, environment: this.config.environment }, () => this.loadInContext(snapshot, signal, force));
  }

  private async loadInContext(snapshot: SnapshotReadyPayload, signal: AbortSignal | undefined, force: boolean): Promise<LoadOutcome> {
    const environment = this.config.environment;
    const label = `snapshot ${snapshot.snapshotId} into ${environment}`;
    this.logger.log(`${force ? 'reloading' : 'loading'} ${label}`);
    try {
      // A location outside SNAPSHOT_DIR is a bad message (InvalidMessageError, rethrown below);
      // an unreadable SNAPSHOT_DIR is a failed load like any other.
      const dir = await resolveSnapshotDir(this.config.snapshotDir, snapshot.location);
      const { result, attempts } = await withRetry(
        this.config.retry,
        async (attempt) => {
          await this.announceStart(snapshot, attempt);
          return loadSnapshot({
            snapshot,
            dir,
            targetDatabaseUrl: this.config.targetDatabaseUrl,
            environment,
            attempt,
            force,
            schemaDrift: this.config.schemaDrift,
            log: (line) => this.logger.log(`${line} into ${environment}`),
          });
        },
        (attempt, error, delayMs) => {
          this.metrics.loadRetries.inc({ environment });
          const retrying = { snapshotId: snapshot.snapshotId, environment, attempt, error: errorMessage(error), retryInMs: delayMs };
          void this.events
            .publish(SUBJECTS.loadRetrying, retrying, `load-retrying:${snapshot.snapshotId}:${environment}:${attempt}`)
            .catch((publishError: unknown) => this.logger.warn(`could not announce the retry: ${errorMessage(publishError)}`));
          this.logger.warn(`loading ${label} failed on attempt ${attempt}, retrying in ${formatDuration(delayMs)}: ${errorMessage(error)}`);
        },
        signal,
      );
      switch (result.kind) {
        case 'superseded':
          this.logger.warn(`skipped ${label}: the environment already holds ${result.by}, dumped later`);
          this.metrics.loads.inc({ environment, result: 'superseded' });
          return { status: 'superseded', by: result.by };
        case 'already-loaded': {
          this.logger.log(`${label}: already loaded (ledger)`);
          const { entry } = result;
          const event = { snapshotId: snapshot.snapshotId, environment, rows: entry.rows, durationMs: entry.durationMs, attempts: entry.attempts };
          if (!entry.announced) await this.announce(event);
          return { status: 'loaded', event };
        }
        case 'loaded': {
          const event: SnapshotLoadedPayload = {
            snapshotId: snapshot.snapshotId,
            environment,
            rows: result.rows,
            durationMs: result.durationMs,
            attempts,
            ...(result.drift ? { drift: result.drift } : {}),
          };
          this.logger.log(`loaded ${label}: ${result.rows} rows in ${result.durationMs}ms (attempts: ${attempts})`);
          this.recordSuccess(snapshot, event);
          await this.announce(event, force);
          await analyzeSnapshotTables(this.config.targetDatabaseUrl, snapshot).catch((error: unknown) =>
            this.logger.warn(`ANALYZE after loading ${label} failed: ${errorMessage(error)}`),
          );
          return { status: 'loaded', event };
        }
      }
    } catch (error) {
      if (error instanceof InvalidMessageError || signal?.aborted) throw error;
      if (!(error instanceof RetriesExhaustedError) && !isSnapshotDirError(error)) throw error;
      const attempts = error instanceof RetriesExhaustedError ? error.attempts : 1;
      const message = errorMessage(error instanceof RetriesExhaustedError ? error.lastError : error);
      await this.reportFailure(snapshot, message, attempts);
      return { status: 'failed', error: message, attempts };
    }
  }

  /** Publishes snapshot.load.failed (with a message id, so a redelivered report is not doubled). */
  async reportFailure(snapshot: SnapshotReadyPayload, error: string, attempts: number): Promise<void> {
    const environment = this.config.environment;
    this.metrics.loads.inc({ environment, result: 'failed' });
    this.logger.error(`loading snapshot ${snapshot.snapshotId} into ${environment} failed after ${attempts} attempt(s): ${error}`);
    await this.events.publish(
      SUBJECTS.snapshotLoadFailed,
      { snapshotId: snapshot.snapshotId, environment, error, attempts },
      `load-failed:${snapshot.snapshotId}:${environment}`,
    );
  }

  private recordSuccess(snapshot: SnapshotReadyPayload, event: SnapshotLoadedPayload): void {
    const environment = event.environment;
    this.metrics.loads.inc({ environment, result: 'success' });
    this.metrics.loadRows.inc({ environment }, event.rows);
    this.metrics.loadBytes.inc({ environment }, snapshot.tables.reduce((sum, t) => sum + t.bytes, 0));
    this.metrics.loadDuration.observe({ environment }, event.durationMs / 1000);
    this.metrics.recordLoadedSnapshot(environment, snapshot.createdAt);
  }

  /** snapshot.load.started, best effort: history and dashboards, never a reason to fail a load. */
  private async announceStart(snapshot: SnapshotReadyPayload, attempt: number): Promise<void> {
    const environment = this.config.environment;
    const event: LoadStartedPayload = { snapshotId: snapshot.snapshotId, environment, attempt, startedAt: new Date().toISOString() };
    await this.events
      .publish(SUBJECTS.loadStarted, event, `load-started:${snapshot.snapshotId}:${environment}:${attempt}`)
      .catch((error: unknown) => this.logger.warn(`could not announce the start of loading ${snapshot.snapshotId}: ${errorMessage(error)}`));
  }

  private async announce(event: SnapshotLoadedPayload, reload = false): Promise<void> {
    // A reload announces again: its own event, not a duplicate of the first load's.
    await this.events.publish(SUBJECTS.snapshotLoaded, event, reload ? undefined : `loaded:${event.snapshotId}:${event.environment}`);
    // Only spares a redelivery from announcing again; the message id already dedupes that event.
    await markLoadAnnounced(this.config.targetDatabaseUrl, event.snapshotId).catch((error: unknown) =>
      this.logger.warn(`could not mark ${event.snapshotId} as announced: ${errorMessage(error)}`),
    );
  }
}

function isSnapshotDirError(error: unknown): boolean {
  return typeof error === 'object' && error !== null && ['ENOENT', 'EACCES', 'ENOTDIR'].includes((error as { code?: string }).code ?? '');
}
