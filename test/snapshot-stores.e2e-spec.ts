import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import type { SnapshotManifest } from '@app/common/contract';
import { NatsSnapshotStore, S3SnapshotStore, type SnapshotStore } from '@app/common/snapshot-store';
import { RunningApp } from './support/apps';
import { runCli } from './support/cli';
import { contentAndSequences, tableContent, type TestDatabase } from './support/databases';
import { DEMO_TABLES } from './support/fixtures';
import { NATS_URL, natsNamespace } from './support/nats';
import { PipelineHarness, until } from './support/pipeline';
import { OwnS3Server } from './support/s3-server';
import { TcpProxy } from './support/tcp-proxy';

/** What a user checks after a refresh: every table, and every sequence, as in production. */
const contentOf = (db: TestDatabase) => contentAndSequences(db, DEMO_TABLES);

/** A SNAPSHOT_DIR that does not exist: with an object store, no loader needs a shared volume. */
const NO_DIR = join(tmpdir(), `db-fanout-no-such-dir-${randomBytes(4).toString('hex')}`);

interface StoreCase {
  store: 'nats' | 's3';
  compression: 'none' | 'gzip';
}

describe.each<StoreCase>([
  { store: 'nats', compression: 'gzip' },
  { store: 's3', compression: 'none' },
  { store: 'nats', compression: 'none' },
  { store: 's3', compression: 'gzip' },
])('SNAPSHOT_STORE=$store, SNAPSHOT_COMPRESSION=$compression', ({ store, compression }) => {
  const bucket = `e2e-${store}-${randomBytes(4).toString('hex')}`;
  let s3: OwnS3Server | undefined;
  let nc: NatsConnection | undefined;
  let pipeline: PipelineHarness;
  let reader: SnapshotStore;

  beforeAll(async () => {
    let storeEnv: Record<string, string> = {};
    if (store === 's3') {
      s3 = await new OwnS3Server().start();
      await s3.createBucket(bucket);
      storeEnv = s3.env();
      Object.assign(process.env, storeEnv);
      reader = new S3SnapshotStore({ bucket, endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true });
    } else {
      nc = await connect({ servers: NATS_URL });
    }
    pipeline = await PipelineHarness.create(`store_${store}_${compression}`, {
      environments: ['dev', 'staging', 'qa'],
      env: { ...storeEnv, SNAPSHOT_STORE: store, SNAPSHOT_BUCKET: bucket, SNAPSHOT_DIR: NO_DIR, RETRY_DELAY: '500ms' },
    });
    await pipeline.startDumper({ SNAPSHOT_COMPRESSION: compression });
    for (const env of ['dev', 'staging', 'qa']) await pipeline.startLoader(env);
    if (nc) reader = await NatsSnapshotStore.open(nc, { bucket, replicas: 1, create: true });
  }, 60_000);

  afterAll(async () => {
    await pipeline?.cleanup();
    if (nc) {
      await (await jetstreamManager(nc)).streams.delete(`OBJ_${bucket}`).catch(() => undefined);
      await nc.close();
    }
    await s3?.stop();
  });

  it('loads every environment equal to production, loaders having no snapshot directory at all', async () => {
    await pipeline.trigger('2024-06-01');
    await pipeline.events.waitFor('three loads', (c) => c.of('snapshot.loaded').length === 3, 60_000);
    const ready = pipeline.readyFor('2024-06-01')!;
    expect(ready.location).toBe(`${store}://${bucket}/prod_snapshot_${String(ready.snapshotId)}`);
    expect(pipeline.events.of('snapshot.load.failed')).toEqual([]);
    const production = await contentOf(pipeline.source);
    for (const env of ['dev', 'staging', 'qa']) expect(await contentOf(pipeline.targets[env])).toEqual(production);

    // The snapshot in the store is what the manifest says: compressed or not, per table.
    const source = await reader.open(String(ready.location));
    const manifest = JSON.parse((await source.manifest()).toString()) as SnapshotManifest & { compression?: string };
    expect(manifest.compression ?? 'none').toBe(compression);
    let csvBytes = 0;
    let storedBytes = 0;
    for (const table of manifest.tables) {
      expect(table.file.endsWith('.csv.gz')).toBe(compression === 'gzip');
      csvBytes += table.bytes;
      storedBytes += (await source.storedSize(table.file))!;
    }
    if (compression === 'gzip') expect(storedBytes).toBeLessThan(csvBytes * 0.5);
    else expect(storedBytes).toBe(csvBytes);
  }, 90_000);

  it("db-fanout reload loads an environment again from the store; the CLI is given no store settings at all", async () => {
    const ready = pipeline.readyFor('2024-06-01')!;
    await pipeline.targets.dev.query('UPDATE public.products SET price = price + 100');
    // Only what the README says the CLI needs: NATS. No SNAPSHOT_*, no S3_*, no AWS credentials.
    const reload = await runCli(['reload', '--env', 'dev'], pipeline.namespace.env);
    expect(reload).toMatchObject({ code: 0, stdout: expect.stringContaining(`asked dev to reload snapshot ${String(ready.snapshotId)}`) });
    await pipeline.events.waitFor('the reload', () => pipeline.loadedIn('dev').length === 2, 60_000);
    expect(pipeline.loadedIn('dev')[1].snapshotId).toBe(ready.snapshotId);
    expect(await contentOf(pipeline.targets.dev)).toEqual(await contentOf(pipeline.source));
  }, 90_000);

  it('fails a load whose stored object was altered, and changes nothing in the environment', async () => {
    // Stop the loaders, publish a new snapshot, tamper with it in the store, then let one loader at it.
    for (const env of ['dev', 'staging', 'qa']) await pipeline.fleet.app(`loader-${env}`).stop();
    await pipeline.source.query('UPDATE public.products SET price = price + 1');
    await pipeline.trigger('2024-06-02');
    await pipeline.events.waitFor('the second snapshot', (c) => c.of('snapshot.ready').length === 2, 60_000);
    const ready = pipeline.readyFor('2024-06-02')!;
    const manifest = JSON.parse((await (await reader.open(String(ready.location))).manifest()).toString()) as SnapshotManifest;
    const products = manifest.tables.find((t) => t.name === 'public.products')!;
    const objectName = `prod_snapshot_${String(ready.snapshotId)}/${products.file}`;
    const original = Buffer.concat(await (await (await reader.open(String(ready.location))).open(products.file)).toArray());
    const forged = Buffer.from(original);
    forged[Math.floor(forged.length / 2)] ^= 0x01;
    if (store === 's3') {
      const client = s3!.client();
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: objectName, Body: forged }));
      client.destroy();
    } else {
      // The Object Store's own digest catches a rewritten object only if its metadata is forged too,
      // so replace the object through the client: its new digest is right, ours (in the manifest) is not.
      const { Objm } = await import('@nats-io/obj');
      const objects = await new Objm(nc!).open(bucket);
      await objects.putBlob({ name: objectName }, forged);
    }

    const before = await contentOf(pipeline.targets.dev);
    await pipeline.startLoader('dev', {}, 'loader-dev-2');
    await pipeline.events.waitFor('the failed load', (c) => c.of('snapshot.load.failed').some((e) => e.snapshotId === ready.snapshotId), 60_000);
    const failure = pipeline.events.of('snapshot.load.failed').find((e) => e.snapshotId === ready.snapshotId)!;
    // Streamed, so where the damage is caught depends on the byte: our checksum or gzip's CRC at the
    // end of the object, or PostgreSQL refusing the garbled CSV first (a data exception, 22xxx).
    // Either way the load failed as a bad snapshot, and nothing changed.
    const caught = /checksum mismatch|not a valid gzip/i.test(String(failure.error)) || String(failure.code).startsWith('22');
    expect({ caught, failure }).toEqual({ caught: true, failure: expect.objectContaining({ environment: 'dev' }) });
    expect(await contentOf(pipeline.targets.dev)).toEqual(before);
  }, 90_000);
});

describe('an upload interrupted by kill -9 of the dumper', () => {
  const bucket = `e2e-kill-${randomBytes(4).toString('hex')}`;
  let nc: NatsConnection;
  let pipeline: PipelineHarness;
  let store: NatsSnapshotStore;

  beforeAll(async () => {
    nc = await connect({ servers: NATS_URL });
    pipeline = await PipelineHarness.create('store_kill', {
      environments: ['dev'],
      env: { SNAPSHOT_STORE: 'nats', SNAPSHOT_BUCKET: bucket, SNAPSHOT_DIR: NO_DIR, RETRY_DELAY: '500ms', ACK_WAIT: '2s' },
      targetSql: { dev: 'CREATE TABLE public.big (id int, filler text);' },
    });
    // Enough data that the upload is still running when the test looks (about 60 MB of CSV).
    await pipeline.source.query(`CREATE TABLE public.big AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS filler FROM generate_series(1, 800000) g`);
    store = await NatsSnapshotStore.open(nc, { bucket, replicas: 1, create: true });
  }, 60_000);

  afterAll(async () => {
    await pipeline?.cleanup();
    await (await jetstreamManager(nc)).streams.delete(`OBJ_${bucket}`).catch(() => undefined);
    await nc?.close();
  });

  /** Chunk subjects of the bucket that no object's metadata names: objects an upload never finished. */
  const unfinishedObjects = async (): Promise<number> => {
    const jsm = await jetstreamManager(nc);
    const subjects = async (filter: string) => Object.keys((await jsm.streams.info(`OBJ_${bucket}`, { subjects_filter: filter })).state.subjects ?? {});
    const live = new Set<string>();
    for (const meta of await subjects(`$O.${bucket}.M.>`)) {
      const info = (await jsm.streams.getMessage(`OBJ_${bucket}`, { last_by_subj: meta }))!.json<{ nuid: string; deleted?: boolean }>();
      if (!info.deleted) live.add(info.nuid);
    }
    return (await subjects(`$O.${bucket}.C.>`)).filter((chunk) => !live.has(chunk.slice(`$O.${bucket}.C.`.length))).length;
  };

  it('publishes nothing and leaves no snapshot a loader could take; the redelivered trigger publishes a complete one; a later retention run clears what the killed upload left', async () => {
    const dumper = await pipeline.startDumper({ TABLES: 'public.big,public.customers' });
    await pipeline.trigger('2024-07-01');
    // Killed with one table's object written and the big one's half sent (chunks no metadata names yet).
    await until('the upload to be under way', async () => (await store.list()).some((s) => !s.complete) && (await unfinishedObjects()) > 0, 60_000);
    await dumper.kill();
    const killedAt = Date.now();
    expect(pipeline.events.of('snapshot.ready')).toEqual([]);
    expect((await store.list()).filter((s) => s.complete)).toEqual([]);
    const [killed] = (await store.list()).filter((s) => !s.complete);

    await pipeline.startLoader('dev');
    // SNAPSHOT_RETENTION at its minimum: the killed upload's leftovers outlive it only after a minute.
    const dumper2 = await pipeline.startDumper({ TABLES: 'public.big,public.customers', SNAPSHOT_RETENTION: '1m' }, 'dumper-2');
    await pipeline.events.waitFor('a complete snapshot, loaded', (c) => c.of('snapshot.loaded').length === 1, 120_000);
    expect(pipeline.events.of('snapshot.ready')).toHaveLength(1);
    expect(await tableContent(pipeline.targets.dev, 'public.customers')).toEqual(await tableContent(pipeline.source, 'public.customers'));
    // Retention ran after that dump, within the minute: the killed upload's leftovers were still young.
    expect((await store.list()).filter((s) => !s.complete)).toEqual([killed]);
    expect(await unfinishedObjects()).toBeGreaterThan(0);

    await new Promise((resolve) => setTimeout(resolve, Math.max(0, killedAt + 62_000 - Date.now())));
    await pipeline.trigger('2024-07-02');
    await pipeline.events.waitFor('the next snapshot, loaded', (c) => c.of('snapshot.loaded').length === 2, 120_000);
    await until('the retention run after that dump', () => Promise.resolve(/retention (removed|, leftovers)/.test(dumper2.output)), 30_000);
    expect((await store.list()).filter((s) => !s.complete)).toEqual([]);
    expect(await unfinishedObjects()).toBe(0);
    expect(dumper2.output).toContain(`retention removed prod_snapshot_${killed.snapshotId} (no manifest)`);
    expect(dumper2.output).toMatch(/retention, leftovers of interrupted uploads: \d+ unfinished Object Store object\(s\): chunks purged/);
    // The newest snapshot stays, whatever its age.
    expect((await store.list()).filter((s) => s.complete).map((s) => s.snapshotId)).toContain(pipeline.readyFor('2024-07-02')!.snapshotId);
  }, 300_000);
});

/**
 * An S3 store that stops answering while a loader opens a snapshot (a restart, a network blip): an
 * outage, retried after RETRY_DELAY like a database that went away, not a snapshot that is missing.
 */
describe('an S3 store out when a loader opens the snapshot', () => {
  const bucket = `e2e-outage-${randomBytes(4).toString('hex')}`;
  let s3: OwnS3Server;
  let proxy: TcpProxy;
  let pipeline: PipelineHarness;

  beforeAll(async () => {
    s3 = await new OwnS3Server().start();
    await s3.createBucket(bucket);
    const endpoint = new URL(s3.endpoint);
    proxy = await TcpProxy.start({ host: endpoint.hostname, port: Number(endpoint.port) });
    pipeline = await PipelineHarness.create('store_outage', {
      environments: ['qa'],
      env: { ...s3.env(), SNAPSHOT_STORE: 's3', SNAPSHOT_BUCKET: bucket, SNAPSHOT_DIR: NO_DIR, RETRY_DELAY: '3s' },
    });
  }, 60_000);

  afterAll(async () => {
    await pipeline?.cleanup();
    await proxy?.down();
    await s3?.stop();
  });

  it('is retried after RETRY_DELAY, and the load succeeds once the store is back', async () => {
    // The dumper reaches the store directly; the loader through a hop the test cuts.
    await pipeline.startDumper();
    await pipeline.startLoader('qa', { S3_ENDPOINT: `http://127.0.0.1:${proxy.port}` });
    await proxy.down();
    await pipeline.trigger('2024-08-01');
    await pipeline.events.waitFor('the load to be retried', (c) => c.of('snapshot.load.retrying').length === 1, 60_000);
    expect(pipeline.events.of('snapshot.load.failed')).toEqual([]);
    await proxy.up();

    await pipeline.events.waitFor('qa loaded', () => pipeline.loadedIn('qa').length === 1, 60_000);
    expect(pipeline.events.of('snapshot.load.failed')).toEqual([]);
    expect(pipeline.loadedIn('qa')[0]).toMatchObject({ attempts: 2 });
    expect(await contentOf(pipeline.targets.qa)).toEqual(await contentOf(pipeline.source));
  });
});

/**
 * An S3 bucket that was never made: the dumper and the loader stop at boot naming it (db-fanout
 * makes no S3 bucket). Before, the dumper answered /health and its first dump failed with the
 * SDK's `The specified bucket does not exist`, naming neither the bucket nor the variable.
 */
describe('an S3 bucket that does not exist', () => {
  const bucket = `fx-s3-missing-${randomBytes(4).toString('hex')}`;
  let s3: OwnS3Server;

  beforeAll(async () => {
    s3 = await new OwnS3Server().start();
  });
  afterAll(async () => {
    await s3?.stop();
  });

  it('stops the dumper and the loader at boot, naming SNAPSHOT_BUCKET and the endpoint', async () => {
    const namespace = natsNamespace('fx_s3_nobucket');
    const env = { ...namespace.env, ...s3.env(), SNAPSHOT_STORE: 's3', SNAPSHOT_BUCKET: bucket, SNAPSHOT_DIR: NO_DIR };
    const expected = `SNAPSHOT_BUCKET ${bucket} does not exist at S3_ENDPOINT ${s3.endpoint}: db-fanout does not create S3 buckets`;
    try {
      for (const [app, own] of [
        ['dumper', { SOURCE_DATABASE_URL: 'postgres://127.0.0.1:1/db' }],
        ['loader', { TARGET_DATABASE_URL: 'postgres://127.0.0.1:1/db', LOADER_ENV: 'dev' }],
      ] as const) {
        const running = await RunningApp.start(app, { ...env, ...own });
        expect([app, await running.waitExit()]).toEqual([app, 1]);
        expect(running.output).toContain(`${app} failed to start: ${expected}`);
        expect(running.output).not.toContain('S3RVER');
      }
    } finally {
      await namespace.cleanup();
    }
  }, 60_000);
});
