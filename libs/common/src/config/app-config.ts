import { CronTime } from 'cron';
import { EnvReader } from './env-reader';
import { parseQualifiedName } from '../database/sql';

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

function readHttp(env: EnvReader, defaultPort: number, withToken: boolean): HttpConfig {
  return {
    port: env.integer('HTTP_PORT', defaultPort, 0, 65535),
    host: env.string('HTTP_HOST', DEFAULTS.HTTP_HOST),
    ...(withToken ? { token: env.optionalString('HTTP_TOKEN') } : {}),
    metricsToken: env.optionalString('METRICS_TOKEN'),
  };
}

/** `text` (Nest's colourful lines) or `json` (one object per line, for log shippers). */
export type LogFormat = 'text' | 'json';

function readLogFormat(env: EnvReader): LogFormat {
  return env.matching('LOG_FORMAT', /^(text|json)$/, 'text or json', 'text') as LogFormat;
}

export interface DumperConfig {
  nats: NatsConfig;
  http: HttpConfig;
  logFormat: LogFormat;
  retry: RetryConfig;
  sourceDatabaseUrl: string;
  snapshotDir: string;
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
  /** When set, the only database hosts this loader may write to (a guard against a wrong URL). */
  targetHostAllowlist: string[];
  loadTriggers: LoadTriggers;
  /** SCHEMA_DRIFT: `fail` (any difference fails the load) or `common-columns` (load what both have, report the rest). */
  schemaDrift: 'fail' | 'common-columns';
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
  SCHEMA_DRIFT: 'fail',
} as const;

function readNats(env: EnvReader): NatsConfig {
  const caFile = env.optionalString('NATS_TLS_CA');
  const certFile = env.optionalString('NATS_TLS_CERT');
  const keyFile = env.optionalString('NATS_TLS_KEY');
  const servers = env.urlList('NATS_URL', ['nats', 'tls', 'ws', 'wss'], DEFAULTS.NATS_URL);
  const useTls = Boolean(caFile || certFile || keyFile) || servers.some((s) => s.startsWith('tls://'));
  return {
    servers,
    stream: env.matching('NATS_STREAM', /^[A-Za-z0-9_-]+$/, 'letters, digits, _ or -', DEFAULTS.NATS_STREAM),
    subjectPrefix: env.matching('NATS_SUBJECT_PREFIX', /^([A-Za-z0-9_-]+\.)*$/, 'empty or tokens ending in a dot, e.g. "acme."', ''),
    user: env.optionalString('NATS_USER'),
    password: env.optionalString('NATS_PASSWORD'),
    token: env.optionalString('NATS_TOKEN'),
    credsFile: env.optionalString('NATS_CREDS'),
    tls: useTls ? { caFile, certFile, keyFile } : undefined,
    ackWaitMs: env.duration('ACK_WAIT', DEFAULTS.ACK_WAIT, 1_000),
    streamMaxAgeMs: env.duration('NATS_STREAM_MAX_AGE', DEFAULTS.NATS_STREAM_MAX_AGE, 60_000),
    streamReplicas: env.integer('NATS_STREAM_REPLICAS', 1, 1, 5),
  };
}

function readRetry(env: EnvReader): RetryConfig {
  return {
    retries: env.integer('RETRIES', DEFAULTS.RETRIES, 0, 100),
    delayMs: env.duration('RETRY_DELAY', DEFAULTS.RETRY_DELAY),
    backoff: env.matching('RETRY_BACKOFF', /^(fixed|exponential)$/, 'fixed or exponential', DEFAULTS.RETRY_BACKOFF) as RetryConfig['backoff'],
    maxDelayMs: env.duration('RETRY_MAX_DELAY', DEFAULTS.RETRY_MAX_DELAY),
  };
}

/** The host a postgres URL really connects to: node-postgres lets `?host=` override the authority. */
function hostOf(url: string): string | undefined {
  try {
    const parsed = new URL(url);
    const host = parsed.searchParams.get('host') ?? parsed.hostname;
    return host.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  } catch {
    return undefined; // already reported as an invalid URL
  }
}

function readTables(env: EnvReader, name: string): { schema: string; name: string }[] {
  const tables: { schema: string; name: string }[] = [];
  for (const entry of env.list(name)) {
    try {
      tables.push(parseQualifiedName(entry));
    } catch (error) {
      env.report(name, `has a bad entry: ${(error as Error).message}`);
    }
  }
  return tables;
}

export function loadDumperConfig(source: Env = process.env): DumperConfig {
  const env = new EnvReader(source);
  const config: DumperConfig = {
    nats: readNats(env),
    http: readHttp(env, DEFAULT_HTTP_PORTS.dumper, false),
    logFormat: readLogFormat(env),
    retry: readRetry(env),
    sourceDatabaseUrl: env.url('SOURCE_DATABASE_URL', ['postgres', 'postgresql']),
    snapshotDir: env.string('SNAPSHOT_DIR', DEFAULTS.SNAPSHOT_DIR),
    tables: readTables(env, 'TABLES'),
    excludeTables: readTables(env, 'EXCLUDE_TABLES'),
    dumpJobs: env.integer('DUMP_JOBS', DEFAULTS.DUMP_JOBS, 1, 32),
    snapshotRetentionMs: env.duration('SNAPSHOT_RETENTION', DEFAULTS.SNAPSHOT_RETENTION, 60_000),
    startDate: env.date('START_DATE', DEFAULTS.START_DATE),
    timeZone: env.timeZone('SCHEDULE_TIMEZONE', DEFAULTS.SCHEDULE_TIMEZONE),
    errorDetail: env.boolean('ERROR_DETAIL', false),
    rulesFile: env.optionalString('DUMP_RULES'),
    maskingKey: env.optionalString('MASKING_KEY'),
  };
  env.done();
  return config;
}

export function loadLoaderConfig(source: Env = process.env): LoaderConfig {
  const env = new EnvReader(source);
  const config: LoaderConfig = {
    nats: readNats(env),
    http: readHttp(env, DEFAULT_HTTP_PORTS.loader, false),
    logFormat: readLogFormat(env),
    retry: readRetry(env),
    targetDatabaseUrl: env.url('TARGET_DATABASE_URL', ['postgres', 'postgresql']),
    environment: env.matching('LOADER_ENV', /^[a-z0-9-]+$/, 'lowercase letters, digits or - ([a-z0-9-]+)'),
    snapshotDir: env.string('SNAPSHOT_DIR', DEFAULTS.SNAPSHOT_DIR),
    targetHostAllowlist: env.list('TARGET_HOST_ALLOWLIST').map((host) => host.toLowerCase()),
    loadTriggers: env.matching('LOAD_TRIGGERS', /^(disable|fire)$/, 'disable or fire', DEFAULTS.LOAD_TRIGGERS) as LoadTriggers,
    schemaDrift: env.matching('SCHEMA_DRIFT', /^(fail|common-columns)$/, 'fail or common-columns', DEFAULTS.SCHEMA_DRIFT) as LoaderConfig['schemaDrift'],
    errorDetail: env.boolean('ERROR_DETAIL', false),
  };
  if (config.targetHostAllowlist.length && config.targetDatabaseUrl) {
    const host = hostOf(config.targetDatabaseUrl);
    if (host !== undefined && !config.targetHostAllowlist.includes(host)) {
      env.report('TARGET_DATABASE_URL', `points at host ${JSON.stringify(host)}, which is not in TARGET_HOST_ALLOWLIST`);
    }
  }
  env.done();
  return config;
}

export function loadSchedulerConfig(source: Env = process.env): SchedulerConfig {
  const env = new EnvReader(source);
  const config: SchedulerConfig = {
    nats: readNats(env),
    http: readHttp(env, DEFAULT_HTTP_PORTS.scheduler, true),
    logFormat: readLogFormat(env),
    schedule: env.string('SCHEDULE', DEFAULTS.SCHEDULE),
    timeZone: env.timeZone('SCHEDULE_TIMEZONE', DEFAULTS.SCHEDULE_TIMEZONE),
    startDate: env.date('START_DATE', DEFAULTS.START_DATE),
    catchup: env.boolean('CATCHUP', false),
    alertWebhookUrl: env.optionalUrl('ALERT_WEBHOOK_URL', ['https', 'http']),
  };
  try {
    new CronTime(config.schedule, config.timeZone);
  } catch (error) {
    env.report('SCHEDULE', `is not a cron expression or preset such as @daily (got ${JSON.stringify(config.schedule)}): ${(error as Error).message}`);
  }
  env.done();
  return config;
}

/** The `db-fanout` CLI: the NATS settings of the apps, and the time zone of "today". */
export interface CliConfig {
  nats: NatsConfig;
  timeZone: string;
  /** Sent as a bearer token on the CLI's HTTP calls to the scheduler (its HTTP_TOKEN). */
  httpToken?: string;
}

export function loadCliConfig(source: Env = process.env): CliConfig {
  const env = new EnvReader(source);
  const config: CliConfig = {
    nats: readNats(env),
    timeZone: env.timeZone('SCHEDULE_TIMEZONE', DEFAULTS.SCHEDULE_TIMEZONE),
    httpToken: env.optionalString('HTTP_TOKEN'),
  };
  env.done();
  return config;
}
