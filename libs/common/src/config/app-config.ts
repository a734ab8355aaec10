import { CronTime } from 'cron';
import { parse as parseConnectionString } from 'pg-connection-string';
import { z } from 'zod';
import { accessToken, boolean, date, duration, integer, LONGEST_WAIT, list, optionalDate, matching, memorySize, memorySizeKb, optionalText, optionalUrl, readableFile, tables, text, timeZone, url, urlList } from './env-fields';
import { envLoader } from './env-reader';

type Env = Record<string, string | undefined>;

export interface NatsConfig {
  servers: string[];
  stream: string;
  /** Prefixes every subject, so several pipelines (or test runs) can share one NATS. */
  subjectPrefix: string;
  user?: string;
  password?: string;
  token?: string;
  credsFile?: string;
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
  /** How long the broker waits for an ack before redelivering; handlers heartbeat well inside it. */
  ackWaitMs: number;
  streamMaxAgeMs: number;
  streamReplicas: number;
}

export interface RetryConfig {
  retries: number;
  delayMs: number;
  backoff: 'fixed' | 'exponential';
  maxDelayMs: number;
}

export interface HttpConfig {
  port: number;
  /** The interface to listen on: 0.0.0.0 for containers, 127.0.0.1 to keep it to the machine. */
  host: string;
  /** When set, `/` and `/api/runs` (scheduler) require `Authorization: Bearer <token>`. */
  token?: string;
  /** When set, `/metrics` and `/health` require `Authorization: Bearer <token>`. */
  metricsToken?: string;
}

/** `text` (Nest's colourful lines) or `json` (one object per line, for log shippers). */
export type LogFormat = 'text' | 'json';

/** Where snapshots travel: a shared directory, a JetStream Object Store bucket, or an S3 bucket. */
export interface SnapshotStoreConfig {
  kind: 'fs' | 'nats' | 's3';
  /** SNAPSHOT_DIR, for `fs`. */
  dir: string;
  /** Object Store or S3 bucket, for `nats` and `s3`. */
  bucket: string;
  s3: { endpoint?: string; region?: string; forcePathStyle: boolean };
}

export interface DumperConfig {
  nats: NatsConfig;
  http: HttpConfig;
  logFormat: LogFormat;
  retry: RetryConfig;
  sourceDatabaseUrl: string;
  snapshotDir: string;
  snapshotStore: SnapshotStoreConfig;
  /** Object Store replicas when the dumper creates the bucket (3 on a 3-node cluster). */
  snapshotReplicas: number;
  snapshotCompression: 'none' | 'gzip';
  tables: { schema: string; name: string }[];
  excludeTables: { schema: string; name: string }[];
  /** Tables dumped at once, each on its own connection sharing one exported snapshot. */
  dumpJobs: number;
  /** Snapshots older than this are removed (never the newest, never one a loader still needs). */
  snapshotRetentionMs: number;
  startDate: string;
  timeZone: string;
  /** ERROR_DETAIL=true: failure events keep PostgreSQL's DETAIL, which can quote row values. */
  errorDetail: boolean;
  /** DUMP_RULES: path of the masking/subsetting rules (YAML or JSON), read at every dump. */
  rulesFile?: string;
  /** MASKING_KEY: the secret of keyed strategies; never logged, never in a manifest. */
  maskingKey?: string;
}

/** `disable`: the target's own user triggers do not fire for loaded rows (as pg_restore --disable-triggers). */
export type LoadTriggers = 'disable' | 'fire';

export interface LoaderConfig {
  nats: NatsConfig;
  http: HttpConfig;
  logFormat: LogFormat;
  retry: RetryConfig;
  targetDatabaseUrl: string;
  environment: string;
  snapshotDir: string;
  snapshotStore: SnapshotStoreConfig;
  /** When set, the only database hosts this loader may write to (a guard against a wrong URL). */
  targetHostAllowlist: string[];
  loadTriggers: LoadTriggers;
  /** SCHEMA_DRIFT: `fail` (any difference fails the load) or `common-columns` (load what both have, report the rest). */
  schemaDrift: 'fail' | 'common-columns';
  /** LOAD_MAINTENANCE_WORK_MEM in kB: the least sort memory the load's index builds get on the target. */
  loadMaintenanceWorkMemKb: number;
  /** ERROR_DETAIL=true: failure events keep PostgreSQL's DETAIL, which can quote row values. */
  errorDetail: boolean;
}

export interface SchedulerConfig {
  nats: NatsConfig;
  http: HttpConfig;
  logFormat: LogFormat;
  schedule: string;
  timeZone: string;
  startDate: string;
  catchup: boolean;
  /** When set, every snapshot.failed and snapshot.load.failed event is POSTed here as JSON. */
  alertWebhookUrl?: string;
}

export const DEFAULT_HTTP_PORTS = { scheduler: 3000, dumper: 3001, loader: 3002 } as const;
export const DEFAULTS = {
  NATS_URL: 'nats://127.0.0.1:4222',
  NATS_STREAM: 'DB_FANOUT',
  SNAPSHOT_DIR: '/tmp',
  SCHEDULE: '@daily',
  SCHEDULE_TIMEZONE: 'UTC',
  START_DATE: '2024-01-01',
  RETRIES: 2,
  RETRY_DELAY: '5m',
  RETRY_BACKOFF: 'fixed',
  RETRY_MAX_DELAY: '1h',
  ACK_WAIT: '30s',
  DUMP_JOBS: 2,
  SNAPSHOT_RETENTION: '7d',
  NATS_STREAM_MAX_AGE: '7d',
  HTTP_HOST: '0.0.0.0',
  LOAD_TRIGGERS: 'disable',
  SNAPSHOT_STORE: 'fs',
  SNAPSHOT_BUCKET: 'db-fanout-snapshots',
  SNAPSHOT_COMPRESSION: 'none',
  SCHEMA_DRIFT: 'fail',
  LOAD_MAINTENANCE_WORK_MEM: '1GB',
} as const;

/** LOAD_MAINTENANCE_WORK_MEM's default in kB, for loads started without a loader's config (tests, tools). */
export const DEFAULT_LOAD_MAINTENANCE_WORK_MEM_KB = memorySizeKb(DEFAULTS.LOAD_MAINTENANCE_WORK_MEM)!;

/**
 * The stream's duplicate window (set when the apps create it): two schedulers firing the same tick
 * publish one Nats-Msg-Id and the stream keeps one. NATS_STREAM_MAX_AGE may not be shorter.
 */
export const STREAM_DUPLICATE_WINDOW_MS = 2 * 60_000;

// Each app's environment as a zod schema, keyed by variable (see env-reader.ts). Problems are listed
// in the order of these keys; `variablesReadBy` finds the variables by running a loader.

const natsVariables = {
  NATS_TLS_CA: readableFile(),
  NATS_TLS_CERT: readableFile(),
  NATS_TLS_KEY: readableFile(),
  NATS_URL: urlList(['nats', 'tls'], DEFAULTS.NATS_URL),
  NATS_STREAM: matching(/^[A-Za-z0-9_-]+$/, 'letters, digits, _ or -', DEFAULTS.NATS_STREAM),
  NATS_SUBJECT_PREFIX: matching(/^([A-Za-z0-9_-]+\.)*$/, 'empty or tokens ending in a dot, e.g. "acme."', ''),
  NATS_USER: optionalText(),
  NATS_PASSWORD: optionalText(),
  NATS_TOKEN: optionalText(),
  NATS_CREDS: readableFile(),
  // Handlers send progress every third of it: a timer, so at most the longest wait a timer makes.
  ACK_WAIT: duration(DEFAULTS.ACK_WAIT, 1_000, LONGEST_WAIT),
  // The broker refuses a stream whose max age is below its duplicate window.
  NATS_STREAM_MAX_AGE: duration(DEFAULTS.NATS_STREAM_MAX_AGE, { ms: STREAM_DUPLICATE_WINDOW_MS, why: "2m, the stream's duplicate window that keeps one trigger per message id" }),
  NATS_STREAM_REPLICAS: integer(1, 1, 5),
};
type NatsVariables = z.output<z.ZodObject<typeof natsVariables>>;

function natsConfig(v: NatsVariables): NatsConfig {
  const [caFile, certFile, keyFile] = [v.NATS_TLS_CA, v.NATS_TLS_CERT, v.NATS_TLS_KEY];
  const useTls = Boolean(caFile || certFile || keyFile) || v.NATS_URL.some((s) => s.startsWith('tls://'));
  return {
    servers: v.NATS_URL,
    stream: v.NATS_STREAM,
    subjectPrefix: v.NATS_SUBJECT_PREFIX,
    user: v.NATS_USER,
    password: v.NATS_PASSWORD,
    token: v.NATS_TOKEN,
    credsFile: v.NATS_CREDS,
    tls: useTls ? { caFile, certFile, keyFile } : undefined,
    ackWaitMs: v.ACK_WAIT,
    streamMaxAgeMs: v.NATS_STREAM_MAX_AGE,
    streamReplicas: v.NATS_STREAM_REPLICAS,
  };
}

const httpVariables = (defaultPort: number) => ({
  HTTP_PORT: integer(defaultPort, 0, 65535),
  HTTP_HOST: text(DEFAULTS.HTTP_HOST),
  METRICS_TOKEN: accessToken('/metrics and /health'),
});
type HttpVariables = z.output<z.ZodObject<ReturnType<typeof httpVariables>>>;

function httpConfig(v: HttpVariables): HttpConfig {
  return { port: v.HTTP_PORT, host: v.HTTP_HOST, metricsToken: v.METRICS_TOKEN };
}

const logVariables = {
  LOG_FORMAT: matching(/^(text|json)$/, 'text or json', 'text').transform((format) => format as LogFormat),
};

const retryVariables = {
  RETRIES: integer(DEFAULTS.RETRIES, 0, 100),
  RETRY_DELAY: duration(DEFAULTS.RETRY_DELAY, 0, LONGEST_WAIT),
  RETRY_BACKOFF: matching(/^(fixed|exponential)$/, 'fixed or exponential', DEFAULTS.RETRY_BACKOFF).transform((backoff) => backoff as RetryConfig['backoff']),
  RETRY_MAX_DELAY: duration(DEFAULTS.RETRY_MAX_DELAY, 0, LONGEST_WAIT),
};
type RetryVariables = z.output<z.ZodObject<typeof retryVariables>>;

function retryConfig(v: RetryVariables): RetryConfig {
  return { retries: v.RETRIES, delayMs: v.RETRY_DELAY, backoff: v.RETRY_BACKOFF, maxDelayMs: v.RETRY_MAX_DELAY };
}

const snapshotStoreVariables = {
  SNAPSHOT_DIR: text(DEFAULTS.SNAPSHOT_DIR),
  SNAPSHOT_STORE: matching(/^(fs|nats|s3)$/, 'fs, nats or s3', DEFAULTS.SNAPSHOT_STORE).transform((kind) => kind as SnapshotStoreConfig['kind']),
  // Valid as a JetStream Object Store name and as an S3 bucket name alike.
  SNAPSHOT_BUCKET: matching(/^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/, 'lowercase letters, digits and -, 3 to 63 characters, the first and last a letter or digit', DEFAULTS.SNAPSHOT_BUCKET),
  S3_ENDPOINT: optionalUrl(['http', 'https']),
  S3_REGION: optionalText(),
  S3_FORCE_PATH_STYLE: boolean(false),
};
type SnapshotStoreVariables = z.output<z.ZodObject<typeof snapshotStoreVariables>>;

function snapshotStoreConfig(v: SnapshotStoreVariables): SnapshotStoreConfig {
  return {
    kind: v.SNAPSHOT_STORE,
    dir: v.SNAPSHOT_DIR,
    bucket: v.SNAPSHOT_BUCKET,
    s3: { endpoint: v.S3_ENDPOINT, region: v.S3_REGION, forcePathStyle: v.S3_FORCE_PATH_STYLE },
  };
}

/** SNAPSHOT_DIR as the apps' snapshotDir, and the store it configures: the dumper and the loader carry both. */
function snapshotFields(v: SnapshotStoreVariables): Pick<DumperConfig & LoaderConfig, 'snapshotDir' | 'snapshotStore'> {
  return { snapshotDir: v.SNAPSHOT_DIR, snapshotStore: snapshotStoreConfig(v) };
}

/**
 * What the dumper and the loader both read first, in this order (the order problems are listed in):
 * NATS, HTTP, the log format and the retry policy.
 */
const workerVariables = (defaultPort: number) => ({ ...natsVariables, ...httpVariables(defaultPort), ...logVariables, ...retryVariables });
type WorkerVariables = z.output<z.ZodObject<ReturnType<typeof workerVariables>>>;

function workerConfig(v: WorkerVariables): Pick<DumperConfig & LoaderConfig, 'nats' | 'http' | 'logFormat' | 'retry'> {
  return { nats: natsConfig(v), http: httpConfig(v), logFormat: v.LOG_FORMAT, retry: retryConfig(v) };
}

const postgresUrl = () => url(['postgres', 'postgresql']);

/**
 * The host a postgres URL really connects to, read by node-postgres' own parser (the one its pool
 * uses): `?host=` overrides the authority, and of several `?host=` the last counts, where
 * URLSearchParams.get took the first and let `?host=dev&host=prod` past the allowlist.
 */
function hostOf(url: string): string | undefined {
  try {
    new URL(url);
  } catch {
    return undefined; // already reported as an invalid URL
  }
  return (parseConnectionString(url).host ?? '').replace(/^\[(.*)\]$/, '$1').toLowerCase();
}

/**
 * DUMP_RULES, MASKING_KEY and ERROR_DETAIL, read alike by the dumper and by `db-fanout rules check`,
 * so the check judges the key the dumper would use (trimmed: a key with a trailing newline from a
 * secret file is the key without it, and a blank one is no key) and shows production's values in
 * its errors only where the dumper would.
 */
const rulesVariables = {
  DUMP_RULES: optionalText(),
  MASKING_KEY: optionalText(),
  ERROR_DETAIL: boolean(false),
};
type RulesVariables = z.output<z.ZodObject<typeof rulesVariables>>;

export type RulesConfig = Pick<DumperConfig, 'rulesFile' | 'maskingKey' | 'errorDetail'>;

const rulesConfig = (v: RulesVariables): RulesConfig => ({ rulesFile: v.DUMP_RULES, maskingKey: v.MASKING_KEY, errorDetail: v.ERROR_DETAIL });

/** The dumper's DUMP_RULES, MASKING_KEY and ERROR_DETAIL alone, for `db-fanout rules check`. */
export const loadRulesConfig: (source?: Env) => RulesConfig = envLoader(z.object(rulesVariables).transform(rulesConfig));

const dumperSchema = z
  .object({
    ...workerVariables(DEFAULT_HTTP_PORTS.dumper),
    SOURCE_DATABASE_URL: postgresUrl(),
    ...snapshotStoreVariables,
    SNAPSHOT_REPLICAS: integer(1, 1, 5),
    SNAPSHOT_COMPRESSION: matching(/^(none|gzip)$/, 'none or gzip', DEFAULTS.SNAPSHOT_COMPRESSION).transform((c) => c as 'none' | 'gzip'),
    TABLES: tables(),
    EXCLUDE_TABLES: tables(),
    DUMP_JOBS: integer(DEFAULTS.DUMP_JOBS, 1, 32),
    SNAPSHOT_RETENTION: duration(DEFAULTS.SNAPSHOT_RETENTION, 60_000),
    START_DATE: date(DEFAULTS.START_DATE),
    SCHEDULE_TIMEZONE: timeZone(DEFAULTS.SCHEDULE_TIMEZONE),
    ...rulesVariables,
  })
  .transform(
    (v): DumperConfig => ({
      ...workerConfig(v),
      sourceDatabaseUrl: v.SOURCE_DATABASE_URL,
      ...snapshotFields(v),
      snapshotReplicas: v.SNAPSHOT_REPLICAS,
      snapshotCompression: v.SNAPSHOT_COMPRESSION,
      tables: v.TABLES,
      excludeTables: v.EXCLUDE_TABLES,
      dumpJobs: v.DUMP_JOBS,
      snapshotRetentionMs: v.SNAPSHOT_RETENTION,
      startDate: v.START_DATE,
      timeZone: v.SCHEDULE_TIMEZONE,
      ...rulesConfig(v),
    }),
  );

export const loadDumperConfig: (source?: Env) => DumperConfig = envLoader(dumperSchema);

const loaderSchema = z
  .object({
    ...workerVariables(DEFAULT_HTTP_PORTS.loader),
    TARGET_DATABASE_URL: postgresUrl(),
    LOADER_ENV: matching(/^[a-z0-9-]+$/, 'lowercase letters, digits or - ([a-z0-9-]+)'),
    ...snapshotStoreVariables,
    TARGET_HOST_ALLOWLIST: list().transform((hosts) => hosts.map((host) => host.toLowerCase())),
    LOAD_TRIGGERS: matching(/^(disable|fire)$/, 'disable or fire', DEFAULTS.LOAD_TRIGGERS).transform((triggers) => triggers as LoadTriggers),
    SCHEMA_DRIFT: matching(/^(fail|common-columns)$/, 'fail or common-columns', DEFAULTS.SCHEMA_DRIFT).transform((mode) => mode as LoaderConfig['schemaDrift']),
    // PostgreSQL's own bounds for maintenance_work_mem: 1MB to 2147483647kB (just under 2TB).
    LOAD_MAINTENANCE_WORK_MEM: memorySize(DEFAULTS.LOAD_MAINTENANCE_WORK_MEM, 1024, 2147483647),
    ERROR_DETAIL: boolean(false),
  })
  .check(
    // Runs even when other variables are wrong, so this problem is listed with theirs.
    z.superRefine(
      (v, ctx) => {
        const [target, allowlist] = [v.TARGET_DATABASE_URL as unknown, v.TARGET_HOST_ALLOWLIST as unknown];
        if (typeof target !== 'string' || !Array.isArray(allowlist) || allowlist.length === 0) return;
        const host = hostOf(target);
        if (host !== undefined && !allowlist.includes(host)) {
          ctx.addIssue({ code: 'custom', path: ['TARGET_DATABASE_URL'], message: `points at host ${JSON.stringify(host)}, which is not in TARGET_HOST_ALLOWLIST` });
        }
      },
      { when: () => true },
    ),
  )
  .transform(
    (v): LoaderConfig => ({
      ...workerConfig(v),
      targetDatabaseUrl: v.TARGET_DATABASE_URL,
      environment: v.LOADER_ENV,
      ...snapshotFields(v),
      targetHostAllowlist: v.TARGET_HOST_ALLOWLIST,
      loadTriggers: v.LOAD_TRIGGERS,
      schemaDrift: v.SCHEMA_DRIFT,
      loadMaintenanceWorkMemKb: v.LOAD_MAINTENANCE_WORK_MEM,
      errorDetail: v.ERROR_DETAIL,
    }),
  );

export const loadLoaderConfig: (source?: Env) => LoaderConfig = envLoader(loaderSchema);

/** A cron expression or preset that the `cron` package (which fires the ticks) accepts. */
const schedule = text(DEFAULTS.SCHEDULE).transform((value, ctx) => {
  let cron: CronTime;
  try {
    cron = new CronTime(value);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: `is not a cron expression or preset such as @daily (got ${JSON.stringify(value)}): ${(error as Error).message}` });
    return z.NEVER;
  }
  try {
    // A valid expression for a day that never comes (30 February) would crash the scheduler later.
    cron.getNextDateFrom(new Date());
    return value;
  } catch {
    ctx.addIssue({ code: 'custom', message: `never fires (got ${JSON.stringify(value)}: no such date in the next 8 years)` });
    return z.NEVER;
  }
});

const schedulerSchema = z
  .object({
    ...natsVariables,
    ...httpVariables(DEFAULT_HTTP_PORTS.scheduler),
    HTTP_TOKEN: accessToken('the status page and /api/runs'),
    ...logVariables,
    SCHEDULE: schedule,
    SCHEDULE_TIMEZONE: timeZone(DEFAULTS.SCHEDULE_TIMEZONE),
    START_DATE: date(DEFAULTS.START_DATE),
    CATCHUP: boolean(false),
    ALERT_WEBHOOK_URL: optionalUrl(['https', 'http']),
  })
  .transform(
    (v): SchedulerConfig => ({
      nats: natsConfig(v),
      http: { ...httpConfig(v), token: v.HTTP_TOKEN },
      logFormat: v.LOG_FORMAT,
      schedule: v.SCHEDULE,
      timeZone: v.SCHEDULE_TIMEZONE,
      startDate: v.START_DATE,
      catchup: v.CATCHUP,
      alertWebhookUrl: v.ALERT_WEBHOOK_URL,
    }),
  );

export const loadSchedulerConfig: (source?: Env) => SchedulerConfig = envLoader(schedulerSchema);

/** The `db-fanout` CLI: the NATS settings of the apps, and the time zone of "today". */
export interface CliConfig {
  nats: NatsConfig;
  timeZone: string;
  /** START_DATE, when set for the CLI (as the dumper has it): a trigger of an earlier date would be refused there. */
  startDate?: string;
  /** Read for the CLI's HTTP calls to the scheduler; it makes none today (the history is read over NATS). */
  httpToken?: string;
}

const cliSchema = z
  .object({
    ...natsVariables,
    SCHEDULE_TIMEZONE: timeZone(DEFAULTS.SCHEDULE_TIMEZONE),
    // No default here: the CLI cannot know the dumper's START_DATE unless it is given the same one.
    START_DATE: optionalDate(),
    HTTP_TOKEN: optionalText(),
  })
  .transform((v): CliConfig => ({ nats: natsConfig(v), timeZone: v.SCHEDULE_TIMEZONE, startDate: v.START_DATE, httpToken: v.HTTP_TOKEN }));

export const loadCliConfig: (source?: Env) => CliConfig = envLoader(cliSchema);
