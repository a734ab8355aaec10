import { setTimeout as sleep } from 'node:timers/promises';
import { Injectable } from '@nestjs/common';
import { collectDefaultMetrics, Counter, Gauge, Histogram, type Metric, Registry } from 'prom-client';

const DURATION_BUCKETS = [0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];
/** The longest a scrape waits for the refreshes registered with onScrape. */
const SCRAPE_REFRESH_MS = 2_000;

/**
 * The pipeline's Prometheus metrics, one registry per process (served on GET /metrics). Every app
 * registers all of them; each records what it does, so dashboards can sum across apps.
 */
@Injectable()
export class MetricsService {
  readonly registry = new Registry();

  readonly dumps = new Counter({ name: 'db_fanout_dumps_total', help: 'Dumps finished, by result (success, failed).', labelNames: ['result'], registers: [this.registry] });
  readonly dumpRows = new Counter({ name: 'db_fanout_dump_rows_total', help: 'Rows written into snapshots.', registers: [this.registry] });
  readonly dumpBytes = new Counter({ name: 'db_fanout_dump_bytes_total', help: 'CSV bytes written into snapshots.', registers: [this.registry] });
  readonly dumpDuration = new Histogram({ name: 'db_fanout_dump_duration_seconds', help: 'Time from a trigger to its snapshot.ready.', buckets: DURATION_BUCKETS, registers: [this.registry] });
  readonly dumpRetries = new Counter({ name: 'db_fanout_dump_retries_total', help: 'Dump attempts that failed transiently and were retried.', registers: [this.registry] });
  /** Registered with its first value (recordSnapshotTaken): see registerWithFirstValue. */
  private readonly lastSnapshotCreated = new Gauge({ name: 'db_fanout_last_snapshot_created_timestamp_seconds', help: 'When the latest snapshot of this dumper was taken.', registers: [] });

  readonly loads = new Counter({ name: 'db_fanout_loads_total', help: 'Loads finished, by environment and result (success, failed, superseded).', labelNames: ['environment', 'result'], registers: [this.registry] });
  readonly loadRows = new Counter({ name: 'db_fanout_load_rows_total', help: 'Rows loaded, by environment.', labelNames: ['environment'], registers: [this.registry] });
  readonly loadBytes = new Counter({ name: 'db_fanout_load_bytes_total', help: 'CSV bytes loaded, by environment.', labelNames: ['environment'], registers: [this.registry] });
  readonly loadDuration = new Histogram({ name: 'db_fanout_load_duration_seconds', help: 'Time a successful load took, by environment.', labelNames: ['environment'], buckets: DURATION_BUCKETS, registers: [this.registry] });
  readonly loadRetries = new Counter({ name: 'db_fanout_load_retries_total', help: 'Load attempts that failed transiently and were retried, by environment.', labelNames: ['environment'], registers: [this.registry] });
  readonly lastLoadSuccess = new Gauge({ name: 'db_fanout_last_load_success_timestamp_seconds', help: 'When the environment last finished a load.', labelNames: ['environment'], registers: [this.registry] });
  private readonly loadedSnapshotCreated = new Map<string, number>();
  readonly snapshotAge = new Gauge({
    name: 'db_fanout_snapshot_age_seconds',
    help: 'Age of the production data the environment holds (now minus the dump time of its snapshot).',
    labelNames: ['environment'],
    registers: [this.registry],
    collect: () => {
      for (const [environment, created] of this.loadedSnapshotCreated) this.snapshotAge.set({ environment }, (Date.now() - created) / 1000);
    },
  });

  readonly triggers = new Counter({ name: 'db_fanout_triggers_total', help: 'Scheduled triggers, by result (published, already_stored, skipped, failed).', labelNames: ['result'], registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'db_fanout_process_' });
  }

  /**
   * The environment holds the snapshot whose data was taken at `takenAt`, loaded at `loadedAtMs`
   * (now, or, after a restart, what the target's ledger says).
   */
  recordLoadedSnapshot(environment: string, takenAt: string, loadedAtMs = Date.now()): void {
    this.loadedSnapshotCreated.set(environment, Date.parse(takenAt));
    this.lastLoadSuccess.set({ environment }, loadedAtMs / 1000);
  }

  /** The dumper's latest snapshot was taken at `takenAt`. */
  recordSnapshotTaken(takenAt: string): void {
    this.registerWithFirstValue(this.lastSnapshotCreated);
    this.lastSnapshotCreated.set(Date.parse(takenAt) / 1000);
  }

  /**
   * A timestamp gauge without labels is exported as 0 until set, which reads as 1970: a staleness
   * alert (`time() - metric > 26h`) would fire for every process that never sets it (the
   * scheduler, every loader) and for a restarted one. Such gauges join the registry with their
   * first value, and are absent until then.
   */
  registerWithFirstValue(metric: Metric): void {
    if (this.registeredLate.has(metric)) return;
    this.registeredLate.add(metric);
    this.registry.registerMetric(metric);
  }

  private readonly registeredLate = new Set<Metric>();

  private readonly beforeScrape: (() => Promise<void>)[] = [];

  /**
   * `refresh` runs before every scrape: gauges that describe something shared by several processes
   * (an environment's data, which any replica of its loader may have loaded) are read from where it
   * is kept, not from what this process did. A refresh that fails or takes longer than
   * SCRAPE_REFRESH_MS leaves the values as they were; the scrape is never held longer.
   */
  onScrape(refresh: () => Promise<void>): void {
    this.beforeScrape.push(refresh);
  }

  async text(): Promise<string> {
    await Promise.all(this.beforeScrape.map((refresh) => Promise.race([refresh().catch(() => undefined), sleep(SCRAPE_REFRESH_MS, undefined, { ref: false })])));
    return this.registry.metrics();
  }
}
