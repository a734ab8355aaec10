import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RunningApp } from './support/apps';
import { natsNamespace } from './support/nats';

/** A missing or invalid value stops the app at boot with one line naming the variable. */
describe('configuration errors at boot', () => {
  async function boot(app: 'scheduler' | 'dumper' | 'loader', env: Record<string, string>): Promise<{ code: number | null; lines: string[] }> {
    const running = await RunningApp.start(app, env);
    const code = await running.waitExit();
    return { code, lines: running.output.split('\n').filter(Boolean) };
  }

  it.each([
    ['loader', {}, 'loader: Invalid configuration: TARGET_DATABASE_URL is required; LOADER_ENV is required'],
    ['loader', { TARGET_DATABASE_URL: 'postgres://u:p@h/db', LOADER_ENV: 'Dev_1' }, 'LOADER_ENV must be lowercase letters, digits or - ([a-z0-9-]+) (got "Dev_1")'],
    ['loader', { TARGET_DATABASE_URL: 'mysql://h/db', LOADER_ENV: 'dev' }, 'TARGET_DATABASE_URL must be a postgres or postgresql URL'],
    ['loader', { TARGET_DATABASE_URL: 'postgres://h/db', LOADER_ENV: 'dev', RETRY_DELAY: '5' }, 'RETRY_DELAY value "5" is not a duration (use e.g. 500ms, 30s, 5m, 2h, 7d)'],
    ['loader', { TARGET_DATABASE_URL: 'postgres://h/db', LOADER_ENV: 'dev', RETRIES: 'two' }, 'RETRIES must be a whole number (got "two")'],
    ['dumper', {}, 'dumper: Invalid configuration: SOURCE_DATABASE_URL is required'],
    ['dumper', { SOURCE_DATABASE_URL: 'postgres://h/db', TABLES: 'customers' }, 'TABLES has a bad entry: table name "customers" must be written schema.table'],
    ['dumper', { SOURCE_DATABASE_URL: 'postgres://h/db', NATS_URL: 'http://x' }, 'NATS_URL must list nats or tls URLs'],
    ['scheduler', { SCHEDULE: 'every day' }, 'SCHEDULE is not a cron expression or preset such as @daily (got "every day")'],
    ['scheduler', { SCHEDULE_TIMEZONE: 'Mars/Olympus' }, 'SCHEDULE_TIMEZONE is not a known time zone (got "Mars/Olympus")'],
    ['scheduler', { START_DATE: '2024-02-30' }, 'START_DATE must be a date YYYY-MM-DD (got "2024-02-30")'],
    ['scheduler', { CATCHUP: 'maybe' }, 'CATCHUP must be true or false (got "maybe")'],
  ] as const)('%s with %j says: %s', async (app, env, message) => {
    const { code, lines } = await boot(app, env);
    expect(code).toBe(1);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(message);
  });

  it('never echoes a password from a malformed database URL', async () => {
    const { code, lines } = await boot('loader', { TARGET_DATABASE_URL: 'postgres://admin:hunter2@db:notaport/x', LOADER_ENV: 'dev' });
    expect(code).toBe(1);
    expect(lines.join('\n')).toContain('TARGET_DATABASE_URL is not a valid URL');
    expect(lines.join('\n')).not.toContain('hunter2');
  });

  it('exits non-zero, loudly, when NATS cannot be reached', async () => {
    const { code, lines } = await boot('dumper', { SOURCE_DATABASE_URL: 'postgres://h/db', NATS_URL: 'nats://127.0.0.1:1' });
    expect(code).toBe(1);
    expect(lines.join('\n')).toContain('dumper failed to start: cannot connect to NATS at nats://127.0.0.1:1');
  });

  it('stops a dumper or an fs loader whose SNAPSHOT_DIR is missing or a file, naming it, instead of failing every dump or load later', async () => {
    const namespace = natsNamespace('snapdir');
    const file = join(tmpdir(), `db-fanout-not-a-dir-${process.pid}`);
    writeFileSync(file, 'x');
    try {
      const dumper = await boot('dumper', { ...namespace.env, SOURCE_DATABASE_URL: 'postgres://h/db', SNAPSHOT_DIR: '/nonexistent/db-fanout-snapshots' });
      expect(dumper.code).toBe(1);
      expect(dumper.lines.join('\n')).toContain('SNAPSHOT_DIR /nonexistent/db-fanout-snapshots does not exist: the dumper writes its snapshots there');
      const loader = await boot('loader', { ...namespace.env, TARGET_DATABASE_URL: 'postgres://h/db', LOADER_ENV: 'dev', SNAPSHOT_DIR: file });
      expect(loader.code).toBe(1);
      expect(loader.lines.join('\n')).toContain(`SNAPSHOT_DIR ${file} is not a directory: the loader reads the snapshots there`);
    } finally {
      rmSync(file, { force: true });
      await namespace.cleanup();
    }
  }, 60_000);

  it('names HTTP_HOST and HTTP_PORT when /health cannot be served there', async () => {
    const namespace = natsNamespace('httphost');
    try {
      const { code, lines } = await boot('scheduler', { ...namespace.env, HTTP_HOST: 'not-a-host.invalid' });
      expect(code).toBe(1);
      expect(lines.join('\n')).toMatch(/scheduler failed to start: cannot serve \/health on HTTP_HOST not-a-host\.invalid HTTP_PORT \d+: .*ENOTFOUND/);
    } finally {
      await namespace.cleanup();
    }
  }, 60_000);
});
