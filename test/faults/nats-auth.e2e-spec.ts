import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { AppFleet, RunningApp } from '../support/apps';
import { createDatabase, tableContent, type TestDatabase } from '../support/databases';
import { DEMO_TABLES, SCHEMA_SQL, SEED_SQL, STALE_SQL } from '../support/fixtures';
import { OwnNatsServer } from '../support/nats-server';
import { natsNamespace, type NatsNamespace } from '../support/nats';
import { until } from '../support/pipeline';
import { ofSubject, type StoredEvent, streamEvents } from '../support/stream-events';

const USER = 'app';
const PASS = 's3cret-pass';
const WRONG_PASS = 'wr0ng-pass-9f3';

/**
 * A NATS server that requires a user and password. The harness's helpers connect without
 * credentials, so this file drives its own authenticated clients.
 */
describe('NATS with user/password authentication', () => {
  const fleet = new AppFleet();
  const stray: RunningApp[] = [];
  const snapshotDir = mkdtempSync(join(tmpdir(), 'db-fanout-natsauth-'));
  let server: OwnNatsServer;
  let source: TestDatabase;
  let dev: TestDatabase;
  let qa: TestDatabase;

  beforeAll(async () => {
    server = await OwnNatsServer.start(['--user', USER, '--pass', PASS]);
    source = await createDatabase('natsauth_prod', SCHEMA_SQL + SEED_SQL);
    dev = await createDatabase('natsauth_dev', SCHEMA_SQL + STALE_SQL);
    qa = await createDatabase('natsauth_qa', SCHEMA_SQL + STALE_SQL);
  });

  afterAll(async () => {
    await fleet.stopAll();
    await Promise.all(stray.map((app) => app.kill()));
    // The server's store (and with it every stream) goes with the server.
    await server?.destroy();
    await Promise.all([source, dev, qa].filter(Boolean).map((db) => db.drop()));
    rmSync(snapshotDir, { recursive: true, force: true });
  });

  const stored = (namespace: NatsNamespace) => streamEvents(server.url, namespace.stream, namespace.prefix, { user: USER, pass: PASS });

  async function publishTrigger(namespace: NatsNamespace, date: string): Promise<void> {
    const nc = await connect({ servers: server.url, user: USER, pass: PASS });
    try {
      await jetstream(nc).publish(`${namespace.prefix}replication.trigger`, JSON.stringify({ date }));
    } finally {
      await nc.close();
    }
  }

  async function waitForStored(namespace: NatsNamespace, description: string, predicate: (events: StoredEvent[]) => boolean): Promise<StoredEvent[]> {
    let events: StoredEvent[] = [];
    await until(description, async () => predicate((events = await stored(namespace))), 30_000);
    return events;
  }

  const appEnv = (namespace: NatsNamespace) => ({ NATS_STREAM: namespace.stream, NATS_SUBJECT_PREFIX: namespace.prefix, SNAPSHOT_DIR: snapshotDir, RETRY_DELAY: '500ms' });
  const snapshotDirs = () => readdirSync(snapshotDir).sort();
  const ledgerIds = async (db: TestDatabase) => (await db.query<{ snapshot_id: string }>('SELECT snapshot_id FROM db_fanout.loaded_snapshots ORDER BY 1')).map((r) => r.snapshot_id);

  let passwordNamespace: NatsNamespace;

  it('NATS_USER and NATS_PASSWORD: the dumper and a loader become healthy, dump and load a trigger', async () => {
    // The premise: this server refuses a client without credentials.
    await expect(connect({ servers: server.url, reconnect: false, timeout: 5_000 })).rejects.toThrow(/authorization/i);

    passwordNamespace = natsNamespace('natsauth', server.url);
    const env = { ...appEnv(passwordNamespace), NATS_URL: server.url, NATS_USER: USER, NATS_PASSWORD: PASS };
    const loader = await fleet.start('loader', { ...env, TARGET_DATABASE_URL: dev.url, LOADER_ENV: 'dev' }, 'loader-dev');
    const dumper = await fleet.start('dumper', { ...env, SOURCE_DATABASE_URL: source.url });
    expect(await dumper.health()).toBe(200);
    expect(await loader.health()).toBe(200);

    await publishTrigger(passwordNamespace, '2024-05-01');
    const events = await waitForStored(passwordNamespace, 'the snapshot to be dumped and loaded', (e) => ofSubject(e, 'snapshot.loaded').length >= 1);

    const ready = ofSubject(events, 'snapshot.ready');
    expect(ready).toHaveLength(1);
    expect(ready[0].date).toBe('2024-05-01');
    expect(ofSubject(events, 'snapshot.loaded')).toEqual([expect.objectContaining({ snapshotId: ready[0].snapshotId, environment: 'dev' })]);
    expect(ofSubject(events, 'snapshot.failed')).toEqual([]);
    expect(snapshotDirs()).toEqual([`prod_snapshot_${ready[0].snapshotId as string}`]);
    expect(await ledgerIds(dev)).toEqual([ready[0].snapshotId]);
    for (const table of DEMO_TABLES) expect(await tableContent(dev, table)).toEqual(await tableContent(source, table));

    for (const app of [dumper, loader]) expect(app.output).not.toContain(PASS);
  });

  it('a wrong NATS_PASSWORD stops the dumper at boot with exit code 1, naming the NATS problem without any password', async () => {
    const eventsBefore = await stored(passwordNamespace);
    const dirsBefore = snapshotDirs();
    const ledgerBefore = await ledgerIds(dev);

    const env = { ...appEnv(passwordNamespace), NATS_URL: server.url, NATS_USER: USER, NATS_PASSWORD: WRONG_PASS };
    const dumper = await RunningApp.start('dumper', { ...env, SOURCE_DATABASE_URL: source.url }, 'dumper-wrong-password');
    stray.push(dumper);
    const timeout = new Promise<'still running'>((resolve) => setTimeout(() => resolve('still running'), 20_000).unref());
    expect(await Promise.race([dumper.waitExit(), timeout])).toBe(1);

    expect(dumper.output).toMatch(/NATS/);
    expect(dumper.output).toMatch(/authorization/i);
    expect(dumper.output).not.toContain(WRONG_PASS);
    expect(dumper.output).not.toContain(PASS);

    // It changed nothing.
    expect(await stored(passwordNamespace)).toEqual(eventsBefore);
    expect(snapshotDirs()).toEqual(dirsBefore);
    expect(await ledgerIds(dev)).toEqual(ledgerBefore);
  });

  it('a wrong password in NATS_URL stops the dumper at boot with exit code 1, naming the NATS problem without any password', async () => {
    const namespace = natsNamespace('natsauthbadurl', server.url);
    const dirsBefore = snapshotDirs();
    const env = { ...appEnv(namespace), NATS_URL: `nats://${USER}:${WRONG_PASS}@127.0.0.1:${server.port}` };
    const dumper = await RunningApp.start('dumper', { ...env, SOURCE_DATABASE_URL: source.url }, 'dumper-wrong-url-password');
    stray.push(dumper);
    const timeout = new Promise<'still running'>((resolve) => setTimeout(() => resolve('still running'), 20_000).unref());
    expect(await Promise.race([dumper.waitExit(), timeout])).toBe(1);

    expect(dumper.output).toMatch(/NATS/);
    expect(dumper.output).toMatch(/authorization/i);
    expect(dumper.output).not.toContain(WRONG_PASS);
    expect(dumper.output).not.toContain(PASS);

    // It changed nothing: no stream was created for it, no snapshot written.
    await expect(stored(namespace)).rejects.toThrow(/stream not found/i);
    expect(snapshotDirs()).toEqual(dirsBefore);
  });

  it('credentials in NATS_URL (nats://user:pass@host:port) work too: the dumper and a loader dump and load a trigger', async () => {
    const namespace = natsNamespace('natsauthurl', server.url);
    const env = { ...appEnv(namespace), NATS_URL: `nats://${USER}:${PASS}@127.0.0.1:${server.port}` };
    const loader = await fleet.start('loader', { ...env, TARGET_DATABASE_URL: qa.url, LOADER_ENV: 'qa' }, 'loader-qa-url');
    const dumper = await fleet.start('dumper', { ...env, SOURCE_DATABASE_URL: source.url }, 'dumper-url');

    await publishTrigger(namespace, '2024-05-02');
    const events = await waitForStored(namespace, 'the snapshot to be dumped and loaded', (e) => ofSubject(e, 'snapshot.loaded').length >= 1);

    const ready = ofSubject(events, 'snapshot.ready');
    expect(ready).toHaveLength(1);
    expect(ready[0].date).toBe('2024-05-02');
    expect(ofSubject(events, 'snapshot.loaded')).toEqual([expect.objectContaining({ snapshotId: ready[0].snapshotId, environment: 'qa' })]);
    expect(snapshotDirs()).toContain(`prod_snapshot_${ready[0].snapshotId as string}`);
    expect(await ledgerIds(qa)).toEqual([ready[0].snapshotId]);
    for (const table of DEMO_TABLES) expect(await tableContent(qa, table)).toEqual(await tableContent(source, table));

    // Stopped, so the whole output, shutdown included, is checked.
    expect(await dumper.stop()).toBe(0);
    expect(await loader.stop()).toBe(0);
    for (const app of [dumper, loader]) expect(app.output).not.toContain(PASS);
  });

  it('the password in NATS_URL never appears in the output, whether or not the dumper gets in', async () => {
    const namespace = natsNamespace('natsauthurlleak', server.url);
    const env = { ...appEnv(namespace), NATS_URL: `nats://${USER}:${PASS}@127.0.0.1:${server.port}` };
    const dumper = await RunningApp.start('dumper', { ...env, SOURCE_DATABASE_URL: source.url }, 'dumper-url-output');
    stray.push(dumper);
    await until('the dumper to become healthy or exit', async () => dumper.exitCode !== undefined || (await dumper.health()) === 200, 20_000);
    const healthy = dumper.exitCode === undefined;
    await dumper.stop();

    expect(dumper.output).not.toContain(PASS);
    // What it did at boot: with the right credentials it got in and created its stream.
    expect({ healthy, exitCode: dumper.exitCode }).toEqual({ healthy: true, exitCode: 0 });
    expect(await stored(namespace)).toEqual([]);
    expect(snapshotDirs().filter((name) => !name.startsWith('prod_snapshot_'))).toEqual([]);
  });
});
