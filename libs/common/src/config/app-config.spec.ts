import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'pg-connection-string';
import { DEFAULT_HTTP_PORTS, loadCliConfig, loadDumperConfig, loadLoaderConfig, loadSchedulerConfig } from './app-config';
import { variablesReadBy } from './config-variables';
import { ConfigError } from './env-reader';
import { errorThrownBy } from '../../../../test/support/errors';

type Env = Record<string, string | undefined>;

const DUMPER_REQUIRED: Env = { SOURCE_DATABASE_URL: 'postgres://reader@prod/app' };
const LOADER_REQUIRED: Env = { TARGET_DATABASE_URL: 'postgres://loader@dev/app', LOADER_ENV: 'dev' };

/** Runs a loader expecting it to refuse the environment, and returns the ConfigError. */
function configErrorOf(load: (env: Env) => unknown, env: Env): ConfigError {
  return errorThrownBy(ConfigError, () => load(env), `configuration was accepted: ${JSON.stringify(env)}`);
}

const apps = {
  scheduler: (env: Env) => loadSchedulerConfig(env),
  dumper: (env: Env) => loadDumperConfig({ ...DUMPER_REQUIRED, ...env }),
  loader: (env: Env) => loadLoaderConfig({ ...LOADER_REQUIRED, ...env }),
};

describe('defaults', () => {
  it('scheduler: NATS on localhost, @daily in UTC from 2024-01-01, no catch-up, port 3000', () => {
    const config = loadSchedulerConfig({});
    expect(config.nats.servers).toEqual(['nats://127.0.0.1:4222']);
    expect(config.schedule).toBe('@daily');
    expect(config.timeZone).toBe('UTC');
    expect(config.startDate).toBe('2024-01-01');
    expect(config.catchup).toBe(false);
    expect(config.http.port).toBe(3000);
  });

  it('dumper: snapshots in /tmp, 2 retries 5 minutes apart, every table, port 3001', () => {
    const config = loadDumperConfig(DUMPER_REQUIRED);
    expect(config.sourceDatabaseUrl).toBe('postgres://reader@prod/app');
    expect(config.nats.servers).toEqual(['nats://127.0.0.1:4222']);
    expect(config.snapshotDir).toBe('/tmp');
    expect(config.retry).toEqual({ retries: 2, delayMs: 300_000, backoff: 'fixed', maxDelayMs: 3_600_000 });
    expect(config.tables).toEqual([]);
    expect(config.excludeTables).toEqual([]);
    expect(config.startDate).toBe('2024-01-01');
    expect(config.timeZone).toBe('UTC');
    expect(config.http.port).toBe(3001);
  });

  it('loader: snapshots in /tmp, 2 retries 5 minutes apart, port 3002', () => {
    const config = loadLoaderConfig(LOADER_REQUIRED);
    expect(config.targetDatabaseUrl).toBe('postgres://loader@dev/app');
    expect(config.environment).toBe('dev');
    expect(config.nats.servers).toEqual(['nats://127.0.0.1:4222']);
    expect(config.snapshotDir).toBe('/tmp');
    expect(config.retry).toEqual({ retries: 2, delayMs: 300_000, backoff: 'fixed', maxDelayMs: 3_600_000 });
    expect(config.targetHostAllowlist).toEqual([]);
    expect(config.http.port).toBe(3002);
    expect(config.loadMaintenanceWorkMemKb).toBe(1024 * 1024); // 1GB
  });

  it('exports the documented default ports', () => {
    expect(DEFAULT_HTTP_PORTS).toEqual({ scheduler: 3000, dumper: 3001, loader: 3002 });
  });

  it('NATS: stream DB_FANOUT, no prefix, no auth, no TLS, 30s ack wait, 7 days, 1 replica', () => {
    expect(loadSchedulerConfig({}).nats).toEqual({
      servers: ['nats://127.0.0.1:4222'],
      stream: 'DB_FANOUT',
      subjectPrefix: '',
      user: undefined,
      password: undefined,
      token: undefined,
      credsFile: undefined,
      tls: undefined,
      ackWaitMs: 30_000,
      streamMaxAgeMs: 7 * 24 * 3_600_000,
      streamReplicas: 1,
    });
  });

  it('treats an empty or blank variable as unset', () => {
    const config = loadDumperConfig({ ...DUMPER_REQUIRED, RETRIES: '', RETRY_DELAY: '   ', NATS_URL: ' ', SNAPSHOT_DIR: '', START_DATE: '' });
    expect(config.retry).toEqual({ retries: 2, delayMs: 300_000, backoff: 'fixed', maxDelayMs: 3_600_000 });
    expect(config.nats.servers).toEqual(['nats://127.0.0.1:4222']);
    expect(config.snapshotDir).toBe('/tmp');
    expect(config.startDate).toBe('2024-01-01');
  });
});

describe('values that are set', () => {
  it('are read and trimmed', () => {
    const config = loadDumperConfig({
      SOURCE_DATABASE_URL: ' postgresql://reader:pw@prod:5432/app ',
      NATS_URL: 'nats://n1:4222, nats://n2:4222',
      HTTP_PORT: '8081',
      RETRIES: '0',
      RETRY_DELAY: '30s',
      RETRY_BACKOFF: 'exponential',
      RETRY_MAX_DELAY: '10m',
      SNAPSHOT_DIR: '/srv/snapshots',
      START_DATE: '2024-03-01',
      SCHEDULE_TIMEZONE: 'Europe/Paris',
      NATS_STREAM: 'MY_STREAM',
      NATS_SUBJECT_PREFIX: 'acme.',
      ACK_WAIT: '1m',
      NATS_STREAM_MAX_AGE: '2d',
      NATS_STREAM_REPLICAS: '3',
      NATS_USER: 'fanout',
      NATS_PASSWORD: 'pw',
    });
    expect(config.sourceDatabaseUrl).toBe('postgresql://reader:pw@prod:5432/app');
    expect(config.nats.servers).toEqual(['nats://n1:4222', 'nats://n2:4222']);
    expect(config.http.port).toBe(8081);
    expect(config.retry).toEqual({ retries: 0, delayMs: 30_000, backoff: 'exponential', maxDelayMs: 600_000 });
    expect(config.snapshotDir).toBe('/srv/snapshots');
    expect(config.startDate).toBe('2024-03-01');
    expect(config.timeZone).toBe('Europe/Paris');
    expect(config.nats).toMatchObject({
      stream: 'MY_STREAM',
      subjectPrefix: 'acme.',
      ackWaitMs: 60_000,
      streamMaxAgeMs: 2 * 86_400_000,
      streamReplicas: 3,
      user: 'fanout',
      password: 'pw',
    });
  });

  it('turn TLS on for a tls:// server or any TLS file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'config-spec-'));
    const ca = join(dir, 'ca.pem');
    writeFileSync(ca, 'not read at boot');
    expect(loadSchedulerConfig({ NATS_URL: 'tls://nats:4222' }).nats.tls).toEqual({ caFile: undefined, certFile: undefined, keyFile: undefined });
    expect(loadSchedulerConfig({ NATS_TLS_CA: ca }).nats.tls).toEqual({ caFile: ca, certFile: undefined, keyFile: undefined });
    rmSync(dir, { recursive: true });
    expect(loadSchedulerConfig({ NATS_URL: 'nats://nats:4222' }).nats.tls).toBeUndefined();
  });

  it('refuse a NATS_CREDS or NATS_TLS_* path that is not a readable file, naming the variable (not a connect error later)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'config-spec-'));
    const unreadable = join(dir, 'key.pem');
    writeFileSync(unreadable, 'secret', { mode: 0o000 });
    let problems: string[];
    try {
      problems = configErrorOf(loadSchedulerConfig, { NATS_CREDS: join(dir, 'missing.creds'), NATS_TLS_CA: dir, NATS_TLS_KEY: unreadable }).problems;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(problems).toEqual(
      expect.arrayContaining([
        `NATS_TLS_CA names ${JSON.stringify(dir)}, which is not a file`,
        `NATS_CREDS names ${JSON.stringify(join(dir, 'missing.creds'))}, which cannot be read (ENOENT)`,
      ]),
    );
    // root reads any file whatever its mode; another user is refused with EACCES.
    if (process.getuid?.() !== 0) expect(problems).toContain(`NATS_TLS_KEY names ${JSON.stringify(unreadable)}, which cannot be read (EACCES)`);
  });

  it.each([
    ['true', true],
    ['TRUE', true],
    ['1', true],
    ['yes', true],
  ])('CATCHUP=%s is read as true', (value) => {
    expect(loadSchedulerConfig({ CATCHUP: value }).catchup).toBe(true);
  });

  it.each(['false', 'FALSE', '0', 'no'])('CATCHUP=%s is accepted as false', (value) => {
    expect(loadSchedulerConfig({ CATCHUP: value }).catchup).toBe(false);
  });

  it.each(['@daily', '@hourly', '0 2 * * *', '0 30 2 * * 1-5'])('SCHEDULE %j is accepted', (schedule) => {
    expect(loadSchedulerConfig({ SCHEDULE: schedule }).schedule).toBe(schedule);
  });

  it('LOAD_MAINTENANCE_WORK_MEM is a size in PostgreSQL\'s units, read in kB', () => {
    const kb = (value: string) => loadLoaderConfig({ ...LOADER_REQUIRED, LOAD_MAINTENANCE_WORK_MEM: value }).loadMaintenanceWorkMemKb;
    expect([kb('256MB'), kb('2GB'), kb('4096kB'), kb(' 1TB ')]).toEqual([256 * 1024, 2 * 1024 ** 2, 4096, 1024 ** 3]);
  });

  it('LOADER_ENV accepts lowercase letters, digits and dashes', () => {
    expect(loadLoaderConfig({ ...LOADER_REQUIRED, LOADER_ENV: 'qa-2' }).environment).toBe('qa-2');
  });
});

describe('each bad value is one ConfigError, on one line, naming the variable', () => {
  const cases: [keyof typeof apps, string, string][] = [
    ['scheduler', 'NATS_URL', 'http://nats:4222'],
    // The Node client speaks no websockets: refused here, not as a connect error that names no variable.
    ['scheduler', 'NATS_URL', 'ws://nats:8080'],
    ['scheduler', 'NATS_URL', 'not a url'],
    ['scheduler', 'NATS_URL', ','],
    ['scheduler', 'HTTP_PORT', '70000'],
    ['scheduler', 'HTTP_PORT', 'eighty'],
    ['scheduler', 'HTTP_PORT', '-1'],
    ['scheduler', 'SCHEDULE', 'every day'],
    ['scheduler', 'SCHEDULE', '61 * * * *'],
    ['scheduler', 'SCHEDULE', '0 0 30 2 *'],
    ['scheduler', 'SCHEDULE_TIMEZONE', 'Mars/Olympus_Mons'],
    ['scheduler', 'START_DATE', '2024-02-30'],
    ['scheduler', 'START_DATE', '01/05/2024'],
    ['scheduler', 'CATCHUP', 'maybe'],
    ['scheduler', 'NATS_STREAM', 'db.fanout'],
    ['scheduler', 'NATS_SUBJECT_PREFIX', 'acme'],
    ['scheduler', 'ACK_WAIT', '500ms'],
    ['scheduler', 'ACK_WAIT', '30'],
    ['scheduler', 'NATS_STREAM_MAX_AGE', '30s'],
    ['scheduler', 'NATS_STREAM_REPLICAS', '0'],
    ['scheduler', 'NATS_STREAM_REPLICAS', '6'],
    ['dumper', 'SOURCE_DATABASE_URL', 'mysql://reader@prod/app'],
    ['dumper', 'SOURCE_DATABASE_URL', 'prod.example.com/app'],
    ['dumper', 'RETRIES', '-1'],
    ['dumper', 'RETRIES', '101'],
    ['dumper', 'RETRIES', 'two'],
    ['dumper', 'RETRIES', '1.5'],
    ['dumper', 'RETRY_DELAY', '30d'],
    ['loader', 'RETRY_MAX_DELAY', '25d'],
    ['dumper', 'RETRY_DELAY', '5'],
    ['dumper', 'RETRY_DELAY', '5 minutes'],
    ['dumper', 'RETRY_BACKOFF', 'linear'],
    ['loader', 'RETRY_MAX_DELAY', '1 hour'],
    ['dumper', 'TABLES', 'customers'],
    ['dumper', 'TABLES', 'public.customers,"unterminated.x'],
    ['dumper', 'EXCLUDE_TABLES', 'a.b.c'],
    ['dumper', 'START_DATE', '2023-02-29'],
    ['dumper', 'SCHEDULE_TIMEZONE', 'Nowhere'],
    ['loader', 'TARGET_DATABASE_URL', 'http://dev/app'],
    ['loader', 'LOADER_ENV', 'Dev_1'],
    ['loader', 'LOADER_ENV', 'dev env'],
    ['loader', 'LOAD_MAINTENANCE_WORK_MEM', '256'],
    ['loader', 'LOAD_MAINTENANCE_WORK_MEM', '1G'],
    ['loader', 'LOAD_MAINTENANCE_WORK_MEM', '256mb'],
    ['loader', 'LOAD_MAINTENANCE_WORK_MEM', '512kB'],
    ['loader', 'LOAD_MAINTENANCE_WORK_MEM', '3TB'],
  ];

  it.each(cases)('%s: %s=%j', (app, variable, value) => {
    const error = configErrorOf(apps[app], { [variable]: value });
    expect(error.name).toBe('ConfigError');
    expect(error.problems).toHaveLength(1);
    expect(error.problems[0].startsWith(`${variable} `)).toBe(true);
    expect(error.message).toBe(`Invalid configuration: ${error.problems[0]}`);
    expect(error.message).not.toContain('\n');
  });

  it('refuses a SCHEDULE that never fires, and a retry or ack wait no timer can make, saying so', () => {
    expect(configErrorOf(apps.scheduler, { SCHEDULE: '0 0 30 2 *' }).problems).toEqual(['SCHEDULE never fires (got "0 0 30 2 *": no such date in the next 8 years)']);
    expect(configErrorOf(apps.dumper, { RETRY_DELAY: '30d' }).problems).toEqual(['RETRY_DELAY must be at most 24d, the longest wait a timer makes (got 30d)']);
    expect(loadDumperConfig({ SOURCE_DATABASE_URL: 'postgres://h/db', RETRY_DELAY: '24d' }).retry.delayMs).toBe(24 * 86_400_000);
    // A longer ack wait overflowed the progress timer (a third of it), which then fired every millisecond.
    expect(configErrorOf(apps.scheduler, { ACK_WAIT: '100d' }).problems).toEqual(['ACK_WAIT must be at most 24d, the longest wait a timer makes (got 100d)']);
    expect(apps.loader({ ACK_WAIT: '24d' }).nats.ackWaitMs).toBe(24 * 86_400_000);
  });

  it('refuses a NATS_STREAM_MAX_AGE shorter than the stream\'s duplicate window (2m), saying why, in every app', () => {
    // Accepted before, it stopped the boot with the broker's `duplicates window can not be larger then max age`.
    for (const load of [apps.scheduler, apps.dumper, apps.loader, loadCliConfig]) {
      expect(configErrorOf(load, { NATS_STREAM_MAX_AGE: '1m' }).problems).toEqual([
        'NATS_STREAM_MAX_AGE must be at least 2m, the stream\'s duplicate window that keeps one trigger per message id (got 1m)',
      ]);
    }
    expect(apps.scheduler({ NATS_STREAM_MAX_AGE: '2m' }).nats.streamMaxAgeMs).toBe(120_000);
  });

  it('says what is wrong with LOAD_MAINTENANCE_WORK_MEM: the unit, or PostgreSQL\'s bounds', () => {
    expect(configErrorOf(apps.loader, { LOAD_MAINTENANCE_WORK_MEM: '256' }).problems).toEqual(['LOAD_MAINTENANCE_WORK_MEM must be a size in kB, MB, GB or TB, such as 256MB (got "256")']);
    expect(configErrorOf(apps.loader, { LOAD_MAINTENANCE_WORK_MEM: '512kB' }).problems).toEqual(['LOAD_MAINTENANCE_WORK_MEM must be between 1MB and 2147483647kB (got 512kB)']);
  });

  it('says what is wrong, e.g. for RETRIES and RETRY_DELAY', () => {
    expect(configErrorOf(apps.dumper, { RETRIES: 'two' }).problems).toEqual(['RETRIES must be a whole number (got "two")']);
    expect(configErrorOf(apps.dumper, { RETRIES: '101' }).problems).toEqual(['RETRIES must be between 0 and 100 (got 101)']);
    expect(configErrorOf(apps.dumper, { RETRY_DELAY: '5' }).problems).toEqual([
      'RETRY_DELAY value "5" is not a duration (use e.g. 500ms, 30s, 5m, 2h, 7d)',
    ]);
    expect(configErrorOf(apps.scheduler, { START_DATE: '2024-02-30' }).problems).toEqual(['START_DATE must be a date YYYY-MM-DD (got "2024-02-30")']);
  });

  it('reports a missing required variable', () => {
    expect(configErrorOf(loadDumperConfig, {}).message).toBe('Invalid configuration: SOURCE_DATABASE_URL is required');
    expect(configErrorOf(loadLoaderConfig, {}).message).toBe('Invalid configuration: TARGET_DATABASE_URL is required; LOADER_ENV is required');
  });
});

describe('several problems', () => {
  it('are listed together in one line', () => {
    const error = configErrorOf(loadDumperConfig, {
      NATS_URL: 'http://nats',
      HTTP_PORT: 'x',
      RETRIES: 'many',
      RETRY_DELAY: '5',
      START_DATE: '2024-13-01',
      TABLES: 'customers',
    });
    const variables = error.problems.map((problem) => problem.split(' ')[0]);
    expect(variables.sort()).toEqual(['HTTP_PORT', 'NATS_URL', 'RETRIES', 'RETRY_DELAY', 'SOURCE_DATABASE_URL', 'START_DATE', 'TABLES']);
    expect(error.message).toBe(`Invalid configuration: ${error.problems.join('; ')}`);
    expect(error.message).not.toContain('\n');
  });

  it('include both a bad schedule and a bad CATCHUP', () => {
    const error = configErrorOf(loadSchedulerConfig, { SCHEDULE: 'sometimes', CATCHUP: 'maybe', SCHEDULE_TIMEZONE: 'Atlantis' });
    expect(error.problems.map((problem) => problem.split(' ')[0]).sort()).toEqual(['CATCHUP', 'SCHEDULE', 'SCHEDULE_TIMEZONE']);
  });
});

describe('a password in a URL', () => {
  const secret = 'hunter2-s3cret';
  it.each([
    ['dumper', 'SOURCE_DATABASE_URL', `postgres://reader:${secret}@prod:notaport/app`],
    ['dumper', 'SOURCE_DATABASE_URL', `mysql://reader:${secret}@prod/app`],
    ['dumper', 'SOURCE_DATABASE_URL', `reader:${secret}@prod/app`],
    ['loader', 'TARGET_DATABASE_URL', `postgres://loader:${secret}@dev:99999/app`],
    ['loader', 'TARGET_DATABASE_URL', `http://loader:${secret}@dev/app`],
    ['scheduler', 'NATS_URL', `nats://fanout:${secret}@nats:port`],
    ['scheduler', 'NATS_URL', `nats://a:4222,https://fanout:${secret}@nats:4222`],
  ] as [keyof typeof apps, string, string][])('is never echoed (%s %s=%s)', (app, variable, value) => {
    const error = configErrorOf(apps[app], { [variable]: value });
    expect(error.problems).toHaveLength(1);
    expect(error.problems[0].startsWith(`${variable} `)).toBe(true);
    expect(error.message).not.toContain(secret);
  });
});

describe('TABLES and EXCLUDE_TABLES', () => {
  it('are comma lists of schema.table, quoted where needed', () => {
    const config = loadDumperConfig({
      ...DUMPER_REQUIRED,
      TABLES: ' public.customers , "Sales"."Order Items",,"my.schema"."my.table", ',
      EXCLUDE_TABLES: 'public.audit_log,Sales.tmp',
    });
    expect(config.tables).toEqual([
      { schema: 'public', name: 'customers' },
      { schema: 'Sales', name: 'Order Items' },
      { schema: 'my.schema', name: 'my.table' },
    ]);
    expect(config.excludeTables).toEqual([
      { schema: 'public', name: 'audit_log' },
      { schema: 'Sales', name: 'tmp' },
    ]);
  });

  it('take a quoted name with a comma in it as one name: a list is split only at commas outside quotes', () => {
    const config = loadDumperConfig({ ...DUMPER_REQUIRED, TABLES: '"a,b".t, public."x, y"', EXCLUDE_TABLES: '"q""u,o".te,public.z' });
    expect(config.tables).toEqual([
      { schema: 'a,b', name: 't' },
      { schema: 'public', name: 'x, y' },
    ]);
    expect(config.excludeTables).toEqual([
      { schema: 'q"u,o', name: 'te' },
      { schema: 'public', name: 'z' },
    ]);
    // An unterminated quote runs to the end of the list: one bad entry, named whole.
    expect(configErrorOf(loadDumperConfig, { ...DUMPER_REQUIRED, TABLES: 'public.ok,"a,b.t' }).problems).toEqual(['TABLES has a bad entry: unterminated quote in table name "\\"a,b.t"']);
  });

  it('report every bad entry, naming the variable and the entry', () => {
    const error = configErrorOf(loadDumperConfig, { ...DUMPER_REQUIRED, TABLES: 'customers,public.ok,a.b.c', EXCLUDE_TABLES: '"x.y' });
    expect(error.problems).toEqual([
      'TABLES has a bad entry: table name "customers" must be written schema.table',
      'TABLES has a bad entry: table name "a.b.c" must be written schema.table',
      'EXCLUDE_TABLES has a bad entry: unterminated quote in table name "\\"x.y"',
    ]);
  });
});

/** README's configuration table states these bounds: each is taken at its edge and refused past it. */
describe('the limits the configuration table states', () => {
  it.each([
    ['RETRIES', ['0', '100'], ['-1', '101'], 'must be between 0 and 100'],
    ['DUMP_JOBS', ['1', '32'], ['0', '33'], 'must be between 1 and 32'],
    ['NATS_STREAM_REPLICAS', ['1', '5'], ['0', '6'], 'must be between 1 and 5'],
    ['SNAPSHOT_REPLICAS', ['1', '5'], ['0', '6'], 'must be between 1 and 5'],
    ['ACK_WAIT', ['1s', '24d'], ['999ms', '25d'], 'must be at'],
    ['SNAPSHOT_RETENTION', ['1m'], ['59s'], 'must be at least'],
    ['SNAPSHOT_BUCKET', ['abc', 'a-b', 'a'.repeat(63)], ['ab', 'a'.repeat(64), '-ab', 'ab-', 'aBc', 'a_b'], 'must be lowercase letters, digits and -, 3 to 63 characters, the first and last a letter or digit'],
  ])('%s', (variable, accepted, refused, message) => {
    for (const value of accepted) expect(() => loadDumperConfig({ ...DUMPER_REQUIRED, [variable]: value })).not.toThrow();
    for (const value of refused) expect(configErrorOf(loadDumperConfig, { ...DUMPER_REQUIRED, [variable]: value }).problems).toEqual([expect.stringContaining(`${variable} ${message}`)]);
  });
});

describe('TARGET_HOST_ALLOWLIST', () => {
  it('lets the loader start when the target host is listed (hosts compared case-insensitively)', () => {
    const config = loadLoaderConfig({ ...LOADER_REQUIRED, TARGET_DATABASE_URL: 'postgres://loader@Dev-DB:5432/app', TARGET_HOST_ALLOWLIST: 'qa-db, DEV-db' });
    expect(config.targetHostAllowlist).toEqual(['qa-db', 'dev-db']);
    expect(config.targetDatabaseUrl).toBe('postgres://loader@Dev-DB:5432/app');
  });

  it('stops the loader when the target host is not listed, naming the host but not the password', () => {
    const error = configErrorOf(loadLoaderConfig, {
      ...LOADER_REQUIRED,
      TARGET_DATABASE_URL: 'postgres://loader:hunter2-s3cret@prod-db:5432/app',
      TARGET_HOST_ALLOWLIST: 'dev-db,staging-db',
    });
    expect(error.problems).toEqual(['TARGET_DATABASE_URL points at host "prod-db", which is not in TARGET_HOST_ALLOWLIST']);
    expect(error.message).not.toContain('hunter2-s3cret');
  });

  it('judges the host node-postgres connects to: a ?host= override, and of several the last one', () => {
    const refused = (url: string) => configErrorOf(loadLoaderConfig, { ...LOADER_REQUIRED, TARGET_DATABASE_URL: url, TARGET_HOST_ALLOWLIST: 'dev-db' }).problems;
    // node-postgres' own parser is the judge of where the pool goes.
    expect(parse('postgres://loader@dev-db/app?host=dev-db&host=prod-db').host).toBe('prod-db');
    expect(refused('postgres://loader@dev-db/app?host=dev-db&host=prod-db')).toEqual(['TARGET_DATABASE_URL points at host "prod-db", which is not in TARGET_HOST_ALLOWLIST']);
    expect(refused('postgres://loader@dev-db/app?host=prod-db')).toEqual(['TARGET_DATABASE_URL points at host "prod-db", which is not in TARGET_HOST_ALLOWLIST']);
    expect(loadLoaderConfig({ ...LOADER_REQUIRED, TARGET_DATABASE_URL: 'postgres://loader@prod-db/app?host=dev-db', TARGET_HOST_ALLOWLIST: 'dev-db' }).targetHostAllowlist).toEqual(['dev-db']);
  });
});

describe('variablesReadBy', () => {
  const common = [
    'ACK_WAIT',
    'HTTP_HOST',
    'HTTP_PORT',
    'LOG_FORMAT',
    'METRICS_TOKEN',
    'NATS_CREDS',
    'NATS_PASSWORD',
    'NATS_STREAM',
    'NATS_STREAM_MAX_AGE',
    'NATS_STREAM_REPLICAS',
    'NATS_SUBJECT_PREFIX',
    'NATS_TLS_CA',
    'NATS_TLS_CERT',
    'NATS_TLS_KEY',
    'NATS_TOKEN',
    'NATS_URL',
    'NATS_USER',
  ];

  it('lists the variables the scheduler reads', () => {
    expect(variablesReadBy(loadSchedulerConfig)).toEqual([...common, 'ALERT_WEBHOOK_URL', 'CATCHUP', 'HTTP_TOKEN', 'SCHEDULE', 'SCHEDULE_TIMEZONE', 'START_DATE'].sort());
  });

  it('lists the variables the dumper reads, though its required one is missing', () => {
    expect(variablesReadBy(loadDumperConfig)).toEqual(
      [...common, 'DUMP_JOBS', 'DUMP_RULES', 'ERROR_DETAIL', 'EXCLUDE_TABLES', 'MASKING_KEY', 'RETRIES', 'RETRY_BACKOFF', 'RETRY_DELAY', 'RETRY_MAX_DELAY', 'SCHEDULE_TIMEZONE', 'S3_ENDPOINT', 'S3_FORCE_PATH_STYLE', 'S3_REGION', 'SNAPSHOT_BUCKET', 'SNAPSHOT_COMPRESSION', 'SNAPSHOT_DIR', 'SNAPSHOT_REPLICAS', 'SNAPSHOT_RETENTION', 'SNAPSHOT_STORE', 'SOURCE_DATABASE_URL', 'START_DATE', 'TABLES'].sort(),
    );
  });

  it('lists the variables the loader reads', () => {
    expect(variablesReadBy(loadLoaderConfig)).toEqual([...common, 'ERROR_DETAIL', 'LOAD_MAINTENANCE_WORK_MEM', 'LOAD_TRIGGERS', 'LOADER_ENV', 'RETRIES', 'RETRY_BACKOFF', 'RETRY_DELAY', 'RETRY_MAX_DELAY', 'S3_ENDPOINT', 'S3_FORCE_PATH_STYLE', 'S3_REGION', 'SCHEMA_DRIFT', 'SNAPSHOT_BUCKET', 'SNAPSHOT_DIR', 'SNAPSHOT_STORE', 'TARGET_DATABASE_URL', 'TARGET_HOST_ALLOWLIST'].sort());
  });

  it('returns each variable once, sorted', () => {
    const read = variablesReadBy((env) => [env.ZED, env.ALPHA, env.ZED, env.MID]);
    expect(read).toEqual(['ALPHA', 'MID', 'ZED']);
  });

  it('passes on an error that is not a ConfigError', () => {
    expect(() =>
      variablesReadBy(() => {
        throw new TypeError('bug in a loader');
      }),
    ).toThrow('bug in a loader');
  });
});

describe('TARGET_HOST_ALLOWLIST looks at the host the driver really uses', () => {
  const base = { LOADER_ENV: 'dev', TARGET_HOST_ALLOWLIST: 'dev-db,::1' };

  it('refuses a ?host= parameter that points elsewhere', () => {
    expect(() => loadLoaderConfig({ ...base, TARGET_DATABASE_URL: 'postgres://loader@dev-db/app?host=prod-db' })).toThrow(
      'TARGET_DATABASE_URL points at host "prod-db", which is not in TARGET_HOST_ALLOWLIST',
    );
  });

  it('accepts an IPv6 host written in brackets when the list has it bare', () => {
    expect(loadLoaderConfig({ ...base, TARGET_DATABASE_URL: 'postgres://loader@[::1]:5432/app' }).targetDatabaseUrl).toContain('[::1]');
  });
});

describe('a duration with a line break', () => {
  it('still yields a one-line error', () => {
    const error = (() => {
      try {
        loadLoaderConfig({ LOADER_ENV: 'dev', TARGET_DATABASE_URL: 'postgres://h/db', RETRY_DELAY: '5\nm' });
      } catch (caught) {
        return caught as Error;
      }
    })();
    expect(error?.message).toBe('Invalid configuration: RETRY_DELAY value "5\\nm" is not a duration (use e.g. 500ms, 30s, 5m, 2h, 7d)');
  });
});

describe('the schema keeps checking after a problem', () => {
  it('lists a host outside TARGET_HOST_ALLOWLIST together with the other problems', () => {
    const error = configErrorOf(loadLoaderConfig, {
      TARGET_DATABASE_URL: 'postgres://loader:hunter2-s3cret@prod-db/app',
      TARGET_HOST_ALLOWLIST: 'dev-db',
      RETRIES: 'x',
    });
    expect(error.problems).toEqual([
      'RETRIES must be a whole number (got "x")',
      'LOADER_ENV is required',
      'TARGET_DATABASE_URL points at host "prod-db", which is not in TARGET_HOST_ALLOWLIST',
    ]);
    expect(error.message).not.toContain('hunter2-s3cret');
  });

  it('checks a cron SCHEDULE even when SCHEDULE_TIMEZONE is wrong', () => {
    expect(configErrorOf(loadSchedulerConfig, { SCHEDULE: '61 * * * *', SCHEDULE_TIMEZONE: 'Atlantis' }).problems.map((p) => p.split(' ')[0])).toEqual([
      'SCHEDULE',
      'SCHEDULE_TIMEZONE',
    ]);
  });
});

describe('HTTP tokens', () => {
  it('are read trimmed: HTTP_TOKEN by the scheduler (and the CLI), METRICS_TOKEN by every app', () => {
    expect(loadSchedulerConfig({ HTTP_TOKEN: ' page ', METRICS_TOKEN: 'metrics' }).http).toEqual({ port: 3000, host: '0.0.0.0', token: 'page', metricsToken: 'metrics' });
    expect(loadLoaderConfig({ ...LOADER_REQUIRED, HTTP_TOKEN: 'page', METRICS_TOKEN: 'metrics' }).http).toEqual({ port: 3002, host: '0.0.0.0', metricsToken: 'metrics' });
    expect(loadDumperConfig({ ...DUMPER_REQUIRED, HTTP_HOST: '127.0.0.1' }).http).toEqual({ port: 3001, host: '127.0.0.1', metricsToken: undefined });
    expect(loadCliConfig({ HTTP_TOKEN: 'page' }).httpToken).toBe('page');
  });

  it('refuse a blank HTTP_TOKEN or METRICS_TOKEN by name (an unfilled secret), and the placeholder the Kubernetes manifests ship', () => {
    expect(configErrorOf(loadSchedulerConfig, { HTTP_TOKEN: '  ' }).message).toBe(
      'Invalid configuration: HTTP_TOKEN is set but blank: give it a value, or remove it to leave the status page and /api/runs open',
    );
    expect(configErrorOf(loadLoaderConfig, { ...LOADER_REQUIRED, METRICS_TOKEN: '' }).message).toBe(
      'Invalid configuration: METRICS_TOKEN is set but blank: give it a value, or remove it to leave /metrics and /health open',
    );
    expect(configErrorOf(loadSchedulerConfig, { HTTP_TOKEN: 'CHANGE-ME' }).message).toBe(
      'Invalid configuration: HTTP_TOKEN is still the placeholder CHANGE-ME of deploy/kubernetes/secrets.yaml: set a secret of your own',
    );
    // The CLI guards nothing: a blank HTTP_TOKEN there is just unset.
    expect(loadCliConfig({ HTTP_TOKEN: '' }).httpToken).toBeUndefined();
  });

  it('are never echoed in a configuration error', () => {
    const error = configErrorOf(loadSchedulerConfig, { HTTP_TOKEN: 'page-s3cret', METRICS_TOKEN: 'metrics-s3cret', HTTP_PORT: 'x' });
    expect(error.message).toBe('Invalid configuration: HTTP_PORT must be a whole number (got "x")');
  });
});

describe('the CLI configuration', () => {
  it('reads the NATS settings, SCHEDULE_TIMEZONE, START_DATE and HTTP_TOKEN', () => {
    expect(variablesReadBy(loadCliConfig)).toEqual(
      ['ACK_WAIT', 'HTTP_TOKEN', 'NATS_CREDS', 'NATS_PASSWORD', 'NATS_STREAM', 'NATS_STREAM_MAX_AGE', 'NATS_STREAM_REPLICAS', 'NATS_SUBJECT_PREFIX', 'NATS_TLS_CA', 'NATS_TLS_CERT', 'NATS_TLS_KEY', 'NATS_TOKEN', 'NATS_URL', 'NATS_USER', 'SCHEDULE_TIMEZONE', 'START_DATE'],
    );
    // Unset: the CLI cannot know the dumper's, and checks nothing.
    expect(loadCliConfig({}).startDate).toBeUndefined();
    expect(loadCliConfig({ START_DATE: '2020-01-01' }).startDate).toBe('2020-01-01');
    expect(configErrorOf(loadCliConfig, { NATS_URL: 'http://x', SCHEDULE_TIMEZONE: 'Nowhere', START_DATE: '2024-13-01' }).problems.map((p) => p.split(' ')[0])).toEqual(['NATS_URL', 'SCHEDULE_TIMEZONE', 'START_DATE']);
  });
});
