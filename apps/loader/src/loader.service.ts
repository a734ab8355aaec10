import { Inject, Injectable, Logger } from '@nestjs/common';
import {
  errorMessage,
  formatDuration,
  EventPublisher,
  type LoaderConfig,
  RetriesExhaustedError,
  type SnapshotLoadedPayload,
  type SnapshotReadyPayload,
  SUBJECTS,
  withRetry,
} from '@app/common';
import { LOADER_CONFIG } from './loader.constants';
import { resolveSnapshotDir } from './snapshot-files';
import { analyzeSnapshotTables, loadSnapshot, markLoadAnnounced } from './snapshot-load';

export type LoadOutcome = { status: 'loaded'; event: SnapshotLoadedPayload } | { status: 'failed'; error: string; attempts: number };

@Injectable()
export class LoaderService {
  private readonly logger = new Logger(`Loader`);

  constructor(
    @Inject(LOADER_CONFIG) private readonly config: LoaderConfig,
    private readonly events: EventPublisher,
  ) {}

  /**
   * Loads a snapshot into this environment, retrying transient failures locally, and announces the
   * outcome. Rejects only when the outcome could not be announced (the message is then redelivered,
   * and the ledger makes the redelivery cheap).
   */
  async load(snapshot: SnapshotReadyPayload, signal?: AbortSignal): Promise<LoadOutcome> {
    // A location outside SNAPSHOT_DIR is a bad message (InvalidMessageError), not a failed load.
    const dir = await resolveSnapshotDir(this.config.snapshotDir, snapshot.location);
    const environment = this.config.environment;
    const label = `snapshot ${snapshot.snapshotId} into ${environment}`;
    this.logger.log(`loading ${label}`);
    try {
      const { result, attempts } = await withRetry(
        this.config.retry,
        (attempt) =>
          loadSnapshot({
            snapshot,
            dir,
            targetDatabaseUrl: this.config.targetDatabaseUrl,
            environment,
            attempt,
            log: (line) => this.logger.log(`${line} into ${environment}`),
          }),
        (attempt, error, delayMs) =>
          this.logger.warn(`loading ${label} failed on attempt ${attempt}, retrying in ${formatDuration(delayMs)}: ${errorMessage(error)}`),
        signal,
      );
      if (result.kind === 'already-loaded') {
        this.logger.log(`${label}: already loaded (ledger)`);
        const { entry } = result;
        const event = { snapshotId: snapshot.snapshotId, environment, rows: entry.rows, durationMs: entry.durationMs, attempts: entry.attempts };
        if (!entry.announced) await this.announce(event);
        return { status: 'loaded', event };
      }
      const event: SnapshotLoadedPayload = { snapshotId: snapshot.snapshotId, environment, rows: result.rows, durationMs: result.durationMs, attempts };
      this.logger.log(`loaded ${label}: ${result.rows} rows in ${result.durationMs}ms (attempts: ${attempts})`);
      await this.announce(event);
      await analyzeSnapshotTables(this.config.targetDatabaseUrl, snapshot).catch((error: unknown) =>
        this.logger.warn(`ANALYZE after loading ${label} failed: ${errorMessage(error)}`),
      );
      return { status: 'loaded', event };
    } catch (error) {
      if (!(error instanceof RetriesExhaustedError) || signal?.aborted) throw error;
      const message = errorMessage(error.lastError);
      this.logger.error(`loading ${label} failed after ${error.attempts} attempt(s): ${message}`);
      await this.events.publish(SUBJECTS.snapshotLoadFailed, { snapshotId: snapshot.snapshotId, environment, error: message, attempts: error.attempts });
      return { status: 'failed', error: message, attempts: error.attempts };
    }
  }

  private async announce(event: SnapshotLoadedPayload): Promise<void> {
    await this.events.publish(SUBJECTS.snapshotLoaded, event, `loaded:${event.snapshotId}:${event.environment}`);
    await markLoadAnnounced(this.config.targetDatabaseUrl, event.snapshotId);
  }
}
