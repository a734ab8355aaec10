import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { RunningApp } from './support/apps';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { streamSubjects } from '@app/common/contract';
import { natsNamespace } from './support/nats';

async function withJetStream<T>(url: string, work: (jsm: JetStreamManager) => Promise<T>): Promise<T> {
  const nc = await connect({ servers: url.split(',') });
  try {
    return await work(await jetstreamManager(nc));
  } finally {
    await nc.close();
  }
}

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
      expect(dumper.lines.join('\n')).toContain('dumper failed to start: SNAPSHOT_DIR /nonexistent/db-fanout-snapshots does not exist: the dumper writes its snapshots there');
      const loader = await boot('loader', { ...namespace.env, TARGET_DATABASE_URL: 'postgres://h/db', LOADER_ENV: 'dev', SNAPSHOT_DIR: file });
      expect(loader.code).toBe(1);
      // The whole error from its start: a boot check is not an HTTP listen failure (`cannot serve /health on ...: SNAPSHOT_DIR ...`).
      expect(loader.lines.join('\n')).toContain(`loader failed to start: SNAPSHOT_DIR ${file} is not a directory: the loader reads the snapshots there`);
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

  it('stops a scheduler whose NATS_SUBJECT_PREFIX the existing NATS_STREAM does not store, naming both, instead of starting healthy and losing every tick', async () => {
    const stored = natsNamespace('prefixstored');
    const other = natsNamespace('prefixother');
    try {
      // The stream exists (another app made it) for stored.prefix; this scheduler is given other.prefix.
      await withJetStream(stored.url, (jsm) => jsm.streams.add({ name: stored.stream, subjects: streamSubjects(stored.prefix) }));
      const scheduler = await RunningApp.start('scheduler', { ...stored.env, NATS_SUBJECT_PREFIX: other.prefix, SCHEDULE: '*/5 * * * * *' });
      // Before, it stayed up (healthy) and failed every tick: bounded, so that shows as a failure, not a hang.
      const code = await Promise.race([scheduler.waitExit(), sleep(15_000, 'still running', { ref: false })]);
      await scheduler.kill();
      const lines = scheduler.output.split('\n').filter(Boolean);
      expect(code).toBe(1);
      expect(lines.join('\n')).toContain(
        `scheduler failed to start: cannot set up JetStream stream ${stored.stream}: NATS_STREAM ${stored.stream} does not store the subjects of NATS_SUBJECT_PREFIX "${other.prefix}" ` +
          `(no stream stores ${other.prefix}replication.trigger, ${other.prefix}snapshot.ready, and 9 more); the stream captures ${stored.prefix}replication.trigger, ${stored.prefix}snapshot.>: ` +
          'check NATS_SUBJECT_PREFIX and NATS_STREAM, which every app of the pipeline must share',
      );
    } finally {
      // A scheduler that started anyway made its run ledger.
      await withJetStream(stored.url, (jsm) => jsm.streams.delete(`KV_${stored.stream}_RUNS`).catch(() => false));
      await stored.cleanup();
      await other.cleanup();
    }
  }, 60_000);

  it('names NATS_STREAM_REPLICAS when a single server will not create the stream or, the stream made already, the scheduler\'s run ledger with it', async () => {
    const namespace = natsNamespace('replicas');
    try {
      const refused = 'replicas > 1 not supported in non-clustered mode';
      const stream = await boot('scheduler', { ...namespace.env, NATS_STREAM_REPLICAS: '3' });
      expect(stream.code).toBe(1);
      expect(stream.lines.join('\n')).toContain(`scheduler failed to start: cannot set up JetStream stream ${namespace.stream}: the broker refused to create stream ${namespace.stream} with NATS_STREAM_REPLICAS=3: ${refused}`);
      await withJetStream(namespace.url, (jsm) => jsm.streams.add({ name: namespace.stream, subjects: streamSubjects(namespace.prefix) }));
      const ledger = await boot('scheduler', { ...namespace.env, NATS_STREAM_REPLICAS: '3' });
      expect(ledger.code).toBe(1);
      expect(ledger.lines.join('\n')).toContain(`scheduler failed to start: the broker refused to create KV bucket ${namespace.stream}_RUNS with NATS_STREAM_REPLICAS=3: ${refused}`);
    } finally {
      await withJetStream(namespace.url, (jsm) => jsm.streams.delete(`KV_${namespace.stream}_RUNS`).catch(() => false));
      await namespace.cleanup();
    }
  }, 60_000);
});
