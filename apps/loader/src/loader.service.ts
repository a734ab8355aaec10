import { Inject, Injectable, Logger, type OnApplicationBootstrap } from '@nestjs/common';
import { formatDuration, type LoaderConfig } from '@app/common/config';
import {
  InvalidMessageError,
  type LoadDrift,
  type LoadSkippedPayload,
  type LoadStartedPayload,
  type SnapshotLoadedPayload,
  type SnapshotLoadFailedPayload,
  type SnapshotReadyPayload,
  snapshotInstant,
  SUBJECTS,
} from '@app/common/contract';
import { EventPublisher } from '@app/common/messaging';
import { describeFailure, errorMessage, MetricsService, withLogContext } from '@app/common/observability';
import { isTransientError, RetriesExhaustedError, withRetry } from '@app/common/resilience';
import { TargetDatabase } from './database/target-database';
import { LOADER_CONFIG } from './loader.constants';
import { checkSnapshotDir, openSnapshotStore, type SnapshotSource, type SnapshotStore, SnapshotLocationError, SnapshotStoreMismatchError } from '@app/common/snapshot-store';
import { NATS_CONNECTION } from '@app/common/messaging';
import type { NatsConnection } from '@nats-io/transport-node';
import { setTimeout as sleep } from 'node:timers/promises';
import { directorySource, resolveSnapshotDir, SNAPSHOT_VISIBILITY, SnapshotNotFoundError, STALL_TIMEOUT_MS, waitForSnapshot } from './snapshot-files';
import { type LoadResult, loadSnapshot } from './snapshot-load';
import type { LedgerEntry } from './ledger';

export type LoadOutcome =
  | { status: 'loaded'; event: SnapshotLoadedPayload }
  | { status: 'skipped'; event: LoadSkippedPayload }
  | { status: 'failed'; error: string; attempts: number };

/** What asked for a load: a snapshot.ready (once per snapshot), or a reload by hand (each its own request). */
export interface LoadRequestOrigin {
  force?: boolean;
  /** The reload message's stream sequence: a reload's events get message ids of their own. */
  reloadSequence?: number;
  /** The message's delivery (1, more after a loader died mid-load): its attempts count on. */
  delivery?: number;
}

/** The fields every load event carries about its request (see LoadRequestFields). */
function requestFields(origin: LoadRequestOrigin): { reloadSequence?: number } {
  return origin.force && origin.reloadSequence !== undefined ? { reloadSequence: origin.reloadSequence } : {};
}

@Injectable()
export class LoaderService implements OnApplicationBootstrap {
  private readonly logger = new Logger(`Loader`);

  constructor(
    @Inject(LOADER_CONFIG) private readonly config: LoaderConfig,
    private readonly events: EventPublisher,
    private readonly metrics: MetricsService,
    private readonly database: TargetDatabase,
    @Inject(NATS_CONNECTION) private readonly connection: NatsConnection,
  ) {}

  /**
   * The object store, opened once: by the start-up check (s3) or the first load, whichever comes
   * first (the consumers may pull before start-up ends). A failed opening is tried again by the next.
   */
  private storeOpening?: Promise<SnapshotStore>;

  private openStore(options: Parameters<typeof openSnapshotStore>[2]): Promise<SnapshotStore> {
    this.storeOpening ??= openSnapshotStore(this.config.snapshotStore, this.connection, options).catch((error: unknown) => {
      this.storeOpening = undefined;
      throw error;
    });
    return this.storeOpening;
  }

  /**
   * db_fanout_snapshot_age_seconds and db_fanout_last_load_success_timestamp_seconds from the
   * target's ledger, at startup and before every scrape: a restarted loader otherwise had neither
   * until its next load, and a replica that takes no message (replicas of an environment share its
   * consumer) kept its startup values while another replica loaded every day, so a staleness alert
   * fired on a healthy environment. A target that is down leaves them as they were.
   */
  async onApplicationBootstrap(): Promise<void> {
    if (this.config.snapshotStore.kind === 'fs') await checkSnapshotDir(this.config.snapshotDir, 'read');
    // An S3 bucket that does not exist stops the loader here, named, rather than every load failing
    // as snapshot-not-found. (An Object Store bucket is the dumper's to create: opened at the first load.)
    if (this.config.snapshotStore.kind === 's3') {
      await this.openStore({ create: false, checkBucket: (warning) => this.logger.warn(warning) });
    }
    try {
      await this.recordLatestLoad();
    } catch (error) {
      this.logger.warn(`could not read the ledger for the metrics of the last load (the next load sets them): ${errorMessage(error)}`);
    }
    this.metrics.onScrape(() => this.recordLatestLoad());
  }

  private async recordLatestLoad(): Promise<void> {
    const latest = await this.database.latestLoad();
    if (latest) this.metrics.recordLoadedSnapshot(this.config.environment, latest.takenAt, latest.loadedAtMs);
  }

  /**
   * The snapshot a message points at. In a directory (`fs`): looked up by name under this loader's
   * SNAPSHOT_DIR, waited for within a bound. In an object store: opened by its location, retried
   * within the same bound while its manifest is not there (or the bucket not made yet).
   */
  private async snapshotSource(snapshot: SnapshotReadyPayload, signal?: AbortSignal): Promise<SnapshotSource & { label: string }> {
    const config = this.config.snapshotStore;
    if (config.kind === 'fs') {
      const dir = await resolveSnapshotDir(this.config.snapshotDir, snapshot.location);
      // A network filesystem may show the directory a little later than the message arrives.
      await waitForSnapshot(dir, signal);
      return directorySource(dir);
    }
    for (let attempt = 1; ; attempt++) {
      try {
        // The dumper creates the bucket; a loader only opens it.
        const store = await this.openStore({ create: false });
        return { label: snapshot.location, ...(await store.open(snapshot.location)) };
      } catch (error) {
        if (error instanceof SnapshotStoreMismatchError) throw error;
        if (error instanceof SnapshotLocationError) throw new InvalidMessageError(error.message);
        if (attempt >= SNAPSHOT_VISIBILITY.attempts || signal?.aborted) {
          // A store that does not answer (down, electing a leader) is an outage: the load's retries
          // (RETRIES, RETRY_DELAY apart) take it, as for a database that went away. One that
          // answers without the snapshot fails the load now.
          if (isTransientError(error)) throw error;
          throw new SnapshotNotFoundError(`snapshot ${snapshot.location} not found in the ${config.kind} snapshot store after ${attempt} looks: ${errorMessage(error)}`);
        }
        await sleep(SNAPSHOT_VISIBILITY.delayMs, undefined, { signal }).catch(() => undefined);
      }
    }
  }

  /**
   * Loads a snapshot into this environment, retrying transient failures locally, and announces the
   * outcome: every attempt ends in snapshot.loaded, snapshot.load.skipped or snapshot.load.failed.
   * Rejects only when the outcome could not be announced (the message is then redelivered, and the
   * ledger makes the redelivery cheap).
   */
  async load(snapshot: SnapshotReadyPayload, signal?: AbortSignal, origin: LoadRequestOrigin = {}): Promise<LoadOutcome> {
    return withLogContext({ snapshotId: snapshot.snapshotId, environment: this.config.environment }, () => this.loadInContext(snapshot, signal, origin));
  }

  private async loadInContext(snapshot: SnapshotReadyPayload, signal: AbortSignal | undefined, origin: LoadRequestOrigin): Promise<LoadOutcome> {
    const environment = this.config.environment;
    const force = origin.force === true;
    const key = eventKey(snapshot, environment, origin);
    const label = loadLabel(snapshot.snapshotId, environment);
    this.logger.log(`${force ? 'reloading' : 'loading'} ${label}`);
    try {
      // A redelivery of what the environment holds (or of a reload request already done) is settled
      // from the ledger before the snapshot is opened: a store or volume unreachable at that moment
      // must not turn it into a failed load and an alert. Unreadable ledger: the load path decides.
      const entry = await this.committedLoad(snapshot, origin);
      if (entry) return await this.settle({ kind: 'already-loaded', entry }, 1, snapshot, label, key, origin, signal);
      const { result, attempts } = await withRetry(
        this.config.retry,
        async (attempt) =>
          loadSnapshot(this.database, {
            snapshot,
            // Opened by every attempt: a store that was out at the first one may be back. The
            // location is looked up by its name under this loader's own SNAPSHOT_DIR (wherever the
            // dumper mounted the volume); one that names no snapshot directory is a bad message
            // (InvalidMessageError, rethrown below); an unreadable SNAPSHOT_DIR is a failed load.
            source: await this.snapshotSource(snapshot, signal),
            stallMs: this.config.snapshotStore.kind === 'fs' ? undefined : STALL_TIMEOUT_MS,
            environment,
            attempt,
            force,
            reloadSequence: origin.reloadSequence,
            triggers: this.config.loadTriggers,
            schemaDrift: this.config.schemaDrift,
            maintenanceWorkMemKb: this.config.loadMaintenanceWorkMemKb,
            // Only once the ledger says there is work: a skipped attempt never shows as started.
            onWork: () => this.announceStart(snapshot, attempt, key, origin, signal),
            signal,
            log: (line) => this.logger.log(`${line} into ${environment}`),
          }),
        (attempt, error, delayMs) => {
          this.metrics.loadRetries.inc({ environment });
          const described = this.describe(error).error;
          const delivery = origin.delivery ?? 1;
          const retrying = { snapshotId: snapshot.snapshotId, environment, attempt, delivery, error: described, retryInMs: delayMs, ...requestFields(origin) };
          void this.events
            .publish(SUBJECTS.loadRetrying, retrying, `load-retrying:${key}:${delivery}:${attempt}`, { signal })
            .catch((publishError: unknown) => this.logger.warn(`could not announce the retry: ${errorMessage(publishError)}`));
          this.logger.warn(`loading ${label} failed on attempt ${attempt}, retrying in ${formatDuration(delayMs)}: ${described}`);
        },
        signal,
      );
      return await this.settle(result, attempts, snapshot, label, key, origin, signal);
    } catch (thrown) {
      // A bad message stays one whichever attempt found it: terminated, never reported as a failed load.
      const error = thrown instanceof RetriesExhaustedError && thrown.lastError instanceof InvalidMessageError ? thrown.lastError : thrown;
      if (error instanceof InvalidMessageError || signal?.aborted) throw error;
      if (!(error instanceof RetriesExhaustedError) && !isSnapshotDirError(error)) throw error;
      const attempts = error instanceof RetriesExhaustedError ? error.attempts : 1;
      const cause = error instanceof RetriesExhaustedError ? error.lastError : error;
      const failure = await this.reportFailure(snapshot, cause, attempts, origin, signal);
      return { status: 'failed', error: failure.error, attempts };
    }
  }

  /**
   * The ledger's entry when this request's load has committed: the snapshot's load, or for a reload
   * the load of this very reload message. An unreadable ledger counts as no entry.
   */
  private async committedLoad(snapshot: SnapshotReadyPayload, origin: LoadRequestOrigin): Promise<LedgerEntry | undefined> {
    const entry = await this.database.loadedEntry(snapshot.snapshotId).catch(() => undefined);
    if (!entry) return undefined;
    return !origin.force || (origin.reloadSequence !== undefined && entry.reloadSeq === origin.reloadSequence) ? entry : undefined;
  }

  /**
   * On a message's last delivery, before its failure is reported: a load that committed but whose
   * snapshot.loaded could not be published (the broker was out past the publish's retries) is
   * announced from the ledger instead of being reported failed. Undefined when the ledger does not
   * have it; rejects when the announcement fails again. `signal`: see EventPublisher.publish (begun
   * after a stop, the announcement gets one try).
   */
  async announceCommitted(snapshot: SnapshotReadyPayload, origin: LoadRequestOrigin, signal?: AbortSignal): Promise<LoadOutcome | undefined> {
    const environment = this.config.environment;
    return withLogContext({ snapshotId: snapshot.snapshotId, environment }, async () => {
      const entry = await this.committedLoad(snapshot, origin);
      if (!entry) return undefined;
      const label = loadLabel(snapshot.snapshotId, environment);
      return this.settle({ kind: 'already-loaded', entry }, 1, snapshot, label, eventKey(snapshot, environment, origin), origin, signal);
    });
  }

  /**
   * The outcome of a load attempt that ended without an error: announced, and returned to the
   * consumer. A stop (`signal`) ends the announcement's retries: it rejects, the message is handed
   * back, and the redelivery announces the load from the ledger.
   */
  private async settle(result: LoadResult, attempts: number, snapshot: SnapshotReadyPayload, label: string, key: string, origin: LoadRequestOrigin, signal?: AbortSignal): Promise<LoadOutcome> {
    const environment = this.config.environment;
    const request = requestFields(origin);
    switch (result.kind) {
      case 'superseded': {
        this.logger.warn(`skipped ${label}: the environment already holds ${result.by}, dumped later`);
        this.metrics.loads.inc({ environment, result: 'superseded' });
        return this.skip({ snapshotId: snapshot.snapshotId, environment, reason: 'superseded', by: result.by, ...request }, key, signal);
      }
      case 'already-loaded': {
        const { entry } = result;
        if (entry.announced) {
          this.logger.log(`${label}: already loaded and announced (ledger)`);
          return this.skip({ snapshotId: snapshot.snapshotId, environment, reason: 'already-loaded', ...request }, key, signal);
        }
        this.logger.log(`${label}: already loaded (ledger), announcing it`);
        // The drift the load recorded in the ledger: the late announcement says what it left out too.
        const event: SnapshotLoadedPayload = {
          snapshotId: snapshot.snapshotId,
          environment,
          rows: entry.rows,
          durationMs: entry.durationMs,
          attempts: entry.attempts,
          // When it committed, not now: the run history ends the load there, however late this is.
          loadedAt: entry.loadedAt,
          ...(entry.drift ? { drift: entry.drift } : {}),
          ...request,
        };
        await this.announce(event, key, signal);
        // The process that committed it died before announcing, so before its ANALYZE too.
        await this.analyzeLoaded(snapshot, entry.drift, label, signal);
        return { status: 'loaded', event };
      }
      case 'loaded': {
        const event: SnapshotLoadedPayload = {
          snapshotId: snapshot.snapshotId,
          environment,
          rows: result.rows,
          durationMs: result.durationMs,
          attempts,
          // The commit's time: the announcement may get through much later (the broker out at commit).
          loadedAt: result.loadedAt,
          ...(result.drift ? { drift: result.drift } : {}),
          ...request,
        };
        this.logger.log(`loaded ${label}: ${result.rows} rows in ${result.durationMs}ms (attempts: ${attempts})`);
        this.recordSuccess(snapshot, event);
        await this.announce(event, key, signal);
        await this.analyzeLoaded(snapshot, result.drift, label, signal);
        return { status: 'loaded', event };
      }
    }
  }

  /**
   * Fresh statistics for the tables just loaded, best effort (a failure costs query plans, never
   * data). A stop gives it up: the load is committed and announced, and autovacuum analyzes them.
   */
  private async analyzeLoaded(snapshot: SnapshotReadyPayload, drift: LoadDrift | undefined, label: string, signal?: AbortSignal): Promise<void> {
    // Only the tables loaded: a table SCHEMA_DRIFT skipped is not in the environment.
    const skipped = new Set(drift?.skippedTables ?? []);
    const analyzed = await this.database
      .analyze(
        snapshot.tables.map((t) => t.name).filter((name) => !skipped.has(name)),
        signal,
      )
      .catch((error: unknown) => {
        this.logger.warn(`ANALYZE after loading ${label} failed: ${errorMessage(error)}`);
        return true;
      });
    if (!analyzed) this.logger.warn(`ANALYZE after loading ${label} given up: the app is stopping (autovacuum analyzes the tables later)`);
  }

  /**
   * Publishes snapshot.load.failed (with a message id, so a redelivered report is not doubled). The
   * error is described for events: its SQLSTATE or our code, and no row values unless ERROR_DETAIL.
   * `signal`: see EventPublisher.publish (begun after a stop, the report gets one try).
   */
  async reportFailure(snapshot: SnapshotReadyPayload, error: unknown, attempts: number, origin: LoadRequestOrigin = {}, signal?: AbortSignal): Promise<SnapshotLoadFailedPayload> {
    const environment = this.config.environment;
    const failure = this.describe(error);
    this.metrics.loads.inc({ environment, result: 'failed' });
    this.logger.error(`loading ${loadLabel(snapshot.snapshotId, environment)} failed after ${attempts} attempt(s): ${failure.error}`);
    const event: SnapshotLoadFailedPayload = {
      snapshotId: snapshot.snapshotId,
      environment,
      error: failure.error,
      ...(failure.code ? { code: failure.code } : {}),
      attempts,
      ...requestFields(origin),
    };
    await this.events.publish(SUBJECTS.snapshotLoadFailed, event, `load-failed:${eventKey(snapshot, environment, origin)}`, { signal });
    return event;
  }

  private describe(error: unknown) {
    return describeFailure(error, { detail: this.config.errorDetail });
  }

  private async skip(event: LoadSkippedPayload, key: string, signal?: AbortSignal): Promise<LoadOutcome> {
    await this.events.publish(SUBJECTS.loadSkipped, event, `load-skipped:${key}`, { signal });
    return { status: 'skipped', event };
  }

  private recordSuccess(snapshot: SnapshotReadyPayload, event: SnapshotLoadedPayload): void {
    const environment = event.environment;
    this.metrics.loads.inc({ environment, result: 'success' });
    this.metrics.loadRows.inc({ environment }, event.rows);
    this.metrics.loadBytes.inc({ environment }, snapshot.tables.reduce((sum, t) => sum + t.bytes, 0));
    this.metrics.loadDuration.observe({ environment }, event.durationMs / 1000);
    this.metrics.recordLoadedSnapshot(environment, snapshotInstant(snapshot));
  }

  /** snapshot.load.started, best effort: history and dashboards, never a reason to fail a load. */
  private async announceStart(snapshot: SnapshotReadyPayload, attempt: number, key: string, origin: LoadRequestOrigin, signal?: AbortSignal): Promise<void> {
    const environment = this.config.environment;
    const delivery = origin.delivery ?? 1;
    const event: LoadStartedPayload = { snapshotId: snapshot.snapshotId, environment, attempt, delivery, startedAt: new Date().toISOString(), ...requestFields(origin) };
    // Per delivery too: a redelivery's attempt 1 is a start of its own, not a duplicate to drop.
    await this.events
      .publish(SUBJECTS.loadStarted, event, `load-started:${key}:${delivery}:${attempt}`, { signal })
      .catch((error: unknown) => this.logger.warn(`could not announce the start of loading ${snapshot.snapshotId}: ${errorMessage(error)}`));
  }

  private async announce(event: SnapshotLoadedPayload, key: string, signal?: AbortSignal): Promise<void> {
    await this.events.publish(SUBJECTS.snapshotLoaded, event, `loaded:${key}`, { signal });
    // Only spares a redelivery from announcing again; the message id already dedupes that event.
    await this.database
      .markAnnounced(event.snapshotId)
      .catch((error: unknown) => this.logger.warn(`could not mark ${event.snapshotId} as announced: ${errorMessage(error)}`));
  }
}

/** How the logs name a load: `snapshot <id> into <environment>`. */
function loadLabel(snapshotId: string, environment: string): string {
  return `snapshot ${snapshotId} into ${environment}`;
}

/**
 * What makes an event's message id: the snapshot and environment, and for a reload the reload
 * message's own sequence (a reload announces again: its own events, not duplicates of the first load's).
 */
function eventKey(snapshot: SnapshotReadyPayload, environment: string, origin: LoadRequestOrigin): string {
  const base = `${snapshot.snapshotId}:${environment}`;
  return origin.force ? `${base}:reload-${origin.reloadSequence ?? 0}` : base;
}

function isSnapshotDirError(error: unknown): boolean {
  return typeof error === 'object' && error !== null && ['ENOENT', 'EACCES', 'ENOTDIR', 'ESTALE', 'EIO', 'snapshot-not-found', 'store-mismatch'].includes((error as { code?: string }).code ?? '');
}
