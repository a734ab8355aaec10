import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AppFleet, type RunningApp } from './apps';
import { createDatabase, type TestDatabase } from './databases';
import { SCHEMA_SQL, SEED_SQL, STALE_SQL } from './fixtures';
import { EventCollector, NATS_URL, natsNamespace, type NatsNamespace, plainPublish } from './nats';

export interface PipelineOptions {
  environments: string[];
  natsUrl?: string;
  /** Extra SQL run in one environment's database after the schema and stale rows. */
  targetSql?: Record<string, string>;
  /** Environment variables given to every app. */
  env?: Record<string, string>;
}

/**
 * One test file's own pipeline: a production database with the demo data, one database per
 * environment, a snapshot directory, a NATS namespace and the apps as real processes.
 */
export class PipelineHarness {
  readonly fleet = new AppFleet();
  readonly targets: Record<string, TestDatabase> = {};
  readonly snapshotDir: string;
  readonly namespace: NatsNamespace;
  source!: TestDatabase;
  events!: EventCollector;

  private constructor(
    label: string,
    private readonly options: PipelineOptions,
  ) {
    this.snapshotDir = mkdtempSync(join(tmpdir(), `db-fanout-${label}-`));
    this.namespace = natsNamespace(label, options.natsUrl ?? NATS_URL);
  }

  static async create(label: string, options: PipelineOptions): Promise<PipelineHarness> {
    const harness = new PipelineHarness(label, options);
    harness.source = await createDatabase(`${label}_prod`, SCHEMA_SQL + SEED_SQL);
    for (const env of options.environments) {
      harness.targets[env] = await createDatabase(`${label}_${env}`, SCHEMA_SQL + STALE_SQL + (options.targetSql?.[env] ?? ''));
    }
    harness.events = await EventCollector.start(harness.namespace);
    return harness;
  }

  get commonEnv(): Record<string, string> {
    return { ...this.namespace.env, SNAPSHOT_DIR: this.snapshotDir, RETRY_DELAY: '500ms', ...this.options.env };
  }

  startDumper(env: Record<string, string> = {}, label = 'dumper'): Promise<RunningApp> {
    return this.fleet.start('dumper', { ...this.commonEnv, SOURCE_DATABASE_URL: this.source.url, ...env }, label);
  }

  startLoader(environment: string, env: Record<string, string> = {}, label = `loader-${environment}`): Promise<RunningApp> {
    return this.fleet.start('loader', { ...this.commonEnv, TARGET_DATABASE_URL: this.targets[environment].url, LOADER_ENV: environment, ...env }, label);
  }

  trigger(date: string, msgId?: string): Promise<void> {
    return plainPublish(`${this.namespace.prefix}replication.trigger`, JSON.stringify({ date }), msgId, this.namespace.url);
  }

  loadedIn(environment: string): Record<string, unknown>[] {
    return this.events.of('snapshot.loaded').filter((e) => e.environment === environment);
  }

  readyFor(date: string): Record<string, unknown> | undefined {
    return this.events.of('snapshot.ready').find((e) => e.date === date);
  }

  async cleanup(): Promise<void> {
    await this.fleet.stopAll();
    await this.events?.stop();
    await this.namespace.cleanup().catch(() => undefined);
    await Promise.all([this.source, ...Object.values(this.targets)].filter(Boolean).map((db) => db.drop()));
    rmSync(this.snapshotDir, { recursive: true, force: true });
  }
}

/**
 * Makes COPY into `table` take `seconds` longer: a load slow on purpose. A CHECK constraint rather
 * than a trigger, because the loader keeps the environment's own triggers from firing
 * (LOAD_TRIGGERS=disable); it sleeps once per transaction, on the first row checked. It is a valid
 * constraint (a NOT VALID one is set aside during a load, as pg_restore would), validated in a
 * transaction that marks itself slowed already, so the set-up does not sleep over existing rows.
 */
export function slowLoadSql(table: string, seconds: number): string {
  return `
    CREATE FUNCTION slow_load() RETURNS boolean LANGUAGE plpgsql AS $$
    BEGIN
      IF current_setting('db_fanout_test.slowed', true) IS DISTINCT FROM 'yes' THEN
        PERFORM pg_sleep(${seconds});
        PERFORM set_config('db_fanout_test.slowed', 'yes', true);
      END IF;
      RETURN true;
    END $$;
    SELECT set_config('db_fanout_test.slowed', 'yes', true);
    ALTER TABLE ${table} ADD CONSTRAINT slow_load CHECK (slow_load());`;
}

/** Waits (bounded) until `condition` holds. */
export async function until(description: string, condition: () => boolean | Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${description}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

export type AppSession = {
  pid: number;
  query: string;
  /** `active` while the query runs; an idle session keeps showing its last query. */
  state: string | null;
  wait_event: string | null;
};

/** An app's sessions as PostgreSQL sees them (by the application_name it connects with). */
export async function appSessions(db: TestDatabase, app: 'loader' | 'dumper'): Promise<AppSession[]> {
  return db.query<AppSession>("SELECT pid, query, state, wait_event FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1", [`db-fanout-${app}`]);
}

/** The loader's session as PostgreSQL sees it, e.g. to know it is inside its COPY. */
export function loaderSessions(db: TestDatabase): Promise<AppSession[]> {
  return appSessions(db, 'loader');
}
