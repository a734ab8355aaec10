import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { CreateMultipartUploadCommand, UploadPartCommand } from '@aws-sdk/client-s3';
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type JsMsg } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { loadDumperConfig, type NatsConfig } from '@app/common/config';
import { ensureStream } from '@app/common/messaging';
import { OwnNatsServer } from '../../../test/support/nats-server';
import { FsSnapshotStore, NatsSnapshotStore, S3SnapshotStore, type SnapshotStore } from '@app/common/snapshot-store';
import { OwnS3Server, S3_TEST_CREDENTIALS } from '../../../test/support/s3-server';
import { applyRetention } from './retention';
import { announcementBucket, recordWritten } from './snapshot-records';

const NATS_URL = process.env.TEST_NATS_URL ?? 'nats://127.0.0.1:4222';
const DAY = 86_400_000;

function natsConfig(name: string, url = NATS_URL): NatsConfig {
  return loadDumperConfig({ SOURCE_DATABASE_URL: 'postgres://h/db', NATS_URL: url, NATS_STREAM: `SPEC_RET_${name}`, NATS_SUBJECT_PREFIX: `spec_ret_${name}.` }).nats;
}

describe('applyRetention (real NATS)', () => {
  let nc: NatsConnection;
  let nats: NatsConfig;
  let dir: string;
  const cleanups: (() => Promise<unknown>)[] = [];

  const snapshot = (snapshotId: string, ageDays: number) => {
    const path = join(dir, `prod_snapshot_${snapshotId}`);
    mkdirSync(path);
    writeFileSync(join(path, 'manifest.json'), JSON.stringify({ snapshotId, createdAt: new Date(Date.now() - ageDays * DAY).toISOString() }));
  };
  const publishReady = async (snapshotId: string, on = nats) =>
    (await jetstream(nc).publish(`${on.subjectPrefix}snapshot.ready`, JSON.stringify({ snapshotId, location: join(dir, `prod_snapshot_${snapshotId}`) }))).seq;
  const addLoader = async (env: string, on = nats) => {
    const jsm = await jetstreamManager(nc);
    await jsm.consumers.add(on.stream, { durable_name: `loader-${env}`, filter_subject: `${on.subjectPrefix}snapshot.ready`, ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All });
  };
  /** The loader of `env` takes its next `count` snapshots; it acks them unless it is slow. */
  const take = async (env: string, count: number, ack = true, on = nats): Promise<JsMsg[]> => {
    const consumer = await jetstream(nc).consumers.get(on.stream, `loader-${env}`);
    const taken: JsMsg[] = [];
    for (let i = 0; i < count; i++) {
      const message = (await consumer.next({ expires: 2_000 }))!;
      if (ack) await message.ackAck();
      taken.push(message);
    }
    return taken;
  };
  const listing = () => readdirSync(dir).sort();

  beforeAll(async () => {
    nc = await connect({ servers: NATS_URL });
  });
  beforeEach(async () => {
    nats = natsConfig(randomBytes(4).toString('hex'));
    await ensureStream(await jetstreamManager(nc), nats);
    dir = mkdtempSync(join(tmpdir(), 'spec-retention-'));
    const [stream, bucket, path] = [nats.stream, announcementBucket(nats), dir];
    cleanups.push(async () => {
      const jsm = await jetstreamManager(nc);
      await jsm.streams.delete(stream).catch(() => undefined);
      await jsm.streams.delete(`KV_${bucket}`).catch(() => undefined);
      rmSync(path, { recursive: true, force: true });
    });
  });
  afterAll(async () => {
    for (const cleanup of cleanups) await cleanup();
    await nc.close();
  });

  it('removes expired snapshots every environment has finished with, keeps the rest and the newest', async () => {
    snapshot('20231201-dddddddd', 40); // expired; its announcement has left the stream since
    snapshot('20240101-aaaaaaaa', 10); // expired, loaded everywhere
    snapshot('20240102-bbbbbbbb', 9); // expired, but qa is still loading it (slow: taken, not acked)
    snapshot('20240103-cccccccc', 8); // expired, and the newest: always kept
    mkdirSync(join(dir, '.tmp-prod_snapshot_20240101-eeeeeeee'));
    utimesSync(join(dir, '.tmp-prod_snapshot_20240101-eeeeeeee'), new Date(Date.now() - 9 * DAY), new Date(Date.now() - 9 * DAY));
    mkdirSync(join(dir, 'not-a-snapshot'));

    const dSeq = await publishReady('20231201-dddddddd');
    for (const snapshotId of ['20240101-aaaaaaaa', '20240102-bbbbbbbb', '20240103-cccccccc']) await publishReady(snapshotId);
    await addLoader('dev');
    await addLoader('qa');
    await take('dev', 4);
    await take('qa', 2);
    await take('qa', 1, false);
    // A run while nothing was old enough records what the stream announced; then the stream forgets d.
    expect((await applyRetention(nc, nats, new FsSnapshotStore(dir), 7 * DAY, Date.now() - 35 * DAY)).removed).toEqual([]);
    await (await jetstreamManager(nc)).streams.deleteMessage(nats.stream, dSeq);

    const result = await applyRetention(nc, nats, new FsSnapshotStore(dir), 7 * DAY);

    expect(result.removed.sort()).toEqual(['.tmp-prod_snapshot_20240101-eeeeeeee', 'prod_snapshot_20231201-dddddddd', 'prod_snapshot_20240101-aaaaaaaa']);
    expect(result.keptInUse).toEqual(['prod_snapshot_20240102-bbbbbbbb']);
    expect(listing()).toEqual(['not-a-snapshot', 'prod_snapshot_20240102-bbbbbbbb', 'prod_snapshot_20240103-cccccccc']);
  });

  it('keeps every snapshot a slow loader holds unacked, and removes it once acked', async () => {
    snapshot('20240101-aaaaaaaa', 10);
    snapshot('20240102-bbbbbbbb', 1);
    await publishReady('20240101-aaaaaaaa');
    await publishReady('20240102-bbbbbbbb');
    await addLoader('dev');
    await addLoader('qa');
    await take('dev', 2);
    const [held] = await take('qa', 1, false); // qa's load of a is still running

    expect(await applyRetention(nc, nats, new FsSnapshotStore(dir), 7 * DAY)).toEqual({ removed: [], keptInUse: ['prod_snapshot_20240101-aaaaaaaa'], notAnnounced: [], leftovers: [] });
    await held.ackAck();
    expect((await applyRetention(nc, nats, new FsSnapshotStore(dir), 7 * DAY)).removed).toEqual(['prod_snapshot_20240101-aaaaaaaa']);
    expect(listing()).toEqual(['prod_snapshot_20240102-bbbbbbbb']);
  });

  it('keeps an old snapshot a `db-fanout reload` asked for until that environment has loaded it', async () => {
    snapshot('20240101-aaaaaaaa', 10);
    snapshot('20240102-bbbbbbbb', 1);
    await publishReady('20240101-aaaaaaaa');
    await publishReady('20240102-bbbbbbbb');
    await addLoader('qa');
    await take('qa', 2);
    // The loader's reload consumer, as LoaderModule binds it: new reloads only, one at a time.
    const jsm = await jetstreamManager(nc);
    await jsm.consumers.add(nats.stream, { durable_name: 'loader-qa-reload', filter_subject: `${nats.subjectPrefix}snapshot.reload.qa`, ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.New, max_ack_pending: 1 });
    const reload = (env: string) => jetstream(nc).publish(`${nats.subjectPrefix}snapshot.reload.${env}`, JSON.stringify({ snapshotId: '20240101-aaaaaaaa', location: join(dir, 'prod_snapshot_20240101-aaaaaaaa') }));
    await reload('qa');
    await reload('gone'); // no loader of that environment will ever take it: it holds nothing
    const kept = { removed: [], keptInUse: ['prod_snapshot_20240101-aaaaaaaa'], notAnnounced: [], leftovers: [] };

    expect(await applyRetention(nc, nats, new FsSnapshotStore(dir), 7 * DAY)).toEqual(kept); // waiting for qa's loader
    const loading = (await (await jetstream(nc).consumers.get(nats.stream, 'loader-qa-reload')).next({ expires: 2_000 }))!;
    expect(await applyRetention(nc, nats, new FsSnapshotStore(dir), 7 * DAY)).toEqual(kept); // being loaded
    await loading.ackAck();
    expect((await applyRetention(nc, nats, new FsSnapshotStore(dir), 7 * DAY)).removed).toEqual(['prod_snapshot_20240101-aaaaaaaa']);
    expect(listing()).toEqual(['prod_snapshot_20240102-bbbbbbbb']);
  });

  it('keeps a snapshot whose reload is asked for while the run removes another one', async () => {
    snapshot('20240101-aaaaaaaa', 10);
    snapshot('20240102-bbbbbbbb', 9);
    snapshot('20240103-cccccccc', 1);
    for (const id of ['20240101-aaaaaaaa', '20240102-bbbbbbbb', '20240103-cccccccc']) await publishReady(id);
    await addLoader('qa');
    await take('qa', 3);
    const jsm = await jetstreamManager(nc);
    await jsm.consumers.add(nats.stream, { durable_name: 'loader-qa-reload', filter_subject: `${nats.subjectPrefix}snapshot.reload.qa`, ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.New, max_ack_pending: 1 });
    // Someone runs `db-fanout reload --snapshot a` while the run removes b (newest first; a big directory takes a while).
    const store = new (class extends FsSnapshotStore {
      override async remove(snapshotId: string) {
        if (snapshotId === '20240102-bbbbbbbb') {
          await jetstream(nc).publish(`${nats.subjectPrefix}snapshot.reload.qa`, JSON.stringify({ snapshotId: '20240101-aaaaaaaa', location: join(dir, 'prod_snapshot_20240101-aaaaaaaa') }));
        }
        return super.remove(snapshotId);
      }
    })(dir);

    expect(await applyRetention(nc, nats, store, 7 * DAY)).toEqual({ removed: ['prod_snapshot_20240102-bbbbbbbb'], keptInUse: ['prod_snapshot_20240101-aaaaaaaa'], notAnnounced: [], leftovers: [] });
    expect(listing()).toEqual(['prod_snapshot_20240101-aaaaaaaa', 'prod_snapshot_20240103-cccccccc']);
  });

  it('keeps everything a stopped loader has not loaded, however old', async () => {
    snapshot('20240101-aaaaaaaa', 30);
    snapshot('20240102-bbbbbbbb', 20);
    snapshot('20240103-cccccccc', 10);
    for (const id of ['20240101-aaaaaaaa', '20240102-bbbbbbbb', '20240103-cccccccc']) await publishReady(id);
    await addLoader('dev');
    await addLoader('staging'); // its loader is down: it never pulls
    await take('dev', 3);

    const result = await applyRetention(nc, nats, new FsSnapshotStore(dir), 7 * DAY);
    expect(result).toEqual({ removed: [], keptInUse: ['prod_snapshot_20240102-bbbbbbbb', 'prod_snapshot_20240101-aaaaaaaa'], notAnnounced: [], leftovers: [] });
    expect(listing()).toHaveLength(3);
  });

  it('never touches a snapshot this stream did not announce: another pipeline sharing SNAPSHOT_DIR, or one put there by hand', async () => {
    const other = natsConfig(`other_${randomBytes(4).toString('hex')}`);
    await ensureStream(await jetstreamManager(nc), other);
    cleanups.push(async () => (await jetstreamManager(nc)).streams.delete(other.stream).catch(() => undefined));
    snapshot('20240101-0a0a0a0a', 30); // the other pipeline's, loaded everywhere there
    snapshot('20240101-0b0b0b0b', 30); // copied in by hand, announced nowhere
    snapshot('20240102-aaaaaaaa', 20); // ours, loaded
    snapshot('20240103-cccccccc', 1); // ours, newest
    await publishReady('20240101-0a0a0a0a', other);
    await addLoader('dev', other);
    await take('dev', 1, true, other);
    await publishReady('20240102-aaaaaaaa');
    await publishReady('20240103-cccccccc');
    await addLoader('dev');
    await take('dev', 2);

    const result = await applyRetention(nc, nats, new FsSnapshotStore(dir), 7 * DAY);
    expect(result.removed).toEqual(['prod_snapshot_20240102-aaaaaaaa']);
    expect(result.notAnnounced.sort()).toEqual(['prod_snapshot_20240101-0a0a0a0a', 'prod_snapshot_20240101-0b0b0b0b']);
    expect(listing()).toEqual(['prod_snapshot_20240101-0a0a0a0a', 'prod_snapshot_20240101-0b0b0b0b', 'prod_snapshot_20240103-cccccccc']);
    // Nor does the other pipeline's bucket learn about ours.
    const theirs = await new Kvm(nc).create(announcementBucket(other));
    cleanups.push(async () => (await jetstreamManager(nc)).streams.delete(`KV_${announcementBucket(other)}`).catch(() => undefined));
    expect(await theirs.get('20240102-aaaaaaaa')).toBeNull();
  });

  it("removes an expired snapshot its dumper wrote but never announced; one whose announcement did reach the stream waits for the loaders", async () => {
    snapshot('20240101-aaaaaaaa', 10); // its publish was refused for good
    snapshot('20240102-bbbbbbbb', 9); // its publish was stored (the ack lost), qa has not loaded it
    snapshot('20240103-cccccccc', 1);
    for (const id of ['20240101-aaaaaaaa', '20240102-bbbbbbbb', '20240103-cccccccc']) await recordWritten(nc, nats, id);
    await publishReady('20240102-bbbbbbbb');
    await publishReady('20240103-cccccccc');
    await addLoader('qa');

    const result = await applyRetention(nc, nats, new FsSnapshotStore(dir), 7 * DAY);
    expect(result).toEqual({ removed: ['prod_snapshot_20240101-aaaaaaaa (never announced)'], keptInUse: ['prod_snapshot_20240102-bbbbbbbb'], notAnnounced: [], leftovers: [] });
    expect(listing()).toEqual(['prod_snapshot_20240102-bbbbbbbb', 'prod_snapshot_20240103-cccccccc']);
    // Its record is purged with it.
    expect((await (await new Kvm(nc).open(announcementBucket(nats))).get('20240101-aaaaaaaa'))?.operation).toBe('PURGE');
  });

  it('removes expired snapshots even when a leftover of an interrupted upload cannot be deleted, and says which', async () => {
    snapshot('20240101-aaaaaaaa', 10); // expired, loaded everywhere
    snapshot('20240102-bbbbbbbb', 1);
    // Another pipeline's killed upload in a shared SNAPSHOT_DIR, owned by its user: we may not delete it.
    const stuck = join(dir, '.tmp-prod_snapshot_20240101-0e0e0e0e');
    mkdirSync(stuck);
    writeFileSync(join(stuck, '0001_a.csv'), 'id\n1\n');
    for (const path of [join(stuck, '0001_a.csv'), stuck]) utimesSync(path, new Date(Date.now() - 9 * DAY), new Date(Date.now() - 9 * DAY));
    await publishReady('20240101-aaaaaaaa');
    await publishReady('20240102-bbbbbbbb');
    await addLoader('dev');
    await take('dev', 2);
    // Tests run as root, whom no file mode stops: the store's own remove() refuses that one leftover
    // as the filesystem does for another user's directory.
    const store = new (class extends FsSnapshotStore {
      override async remove(snapshotId: string) {
        if (snapshotId === '20240101-0e0e0e0e') {
          throw Object.assign(new Error(`EACCES: permission denied, unlink '${join(stuck, '0001_a.csv')}'`), { code: 'EACCES', errno: -13, syscall: 'unlink' });
        }
        return super.remove(snapshotId);
      }
    })(dir);

    expect(await applyRetention(nc, nats, store, 7 * DAY)).toEqual({
      removed: ['prod_snapshot_20240101-aaaaaaaa'],
      keptInUse: [],
      notAnnounced: [],
      leftovers: [`.tmp-prod_snapshot_20240101-0e0e0e0e: not removed (EACCES: permission denied, unlink '${join(stuck, '0001_a.csv')}')`],
    });
    expect(listing()).toEqual(['.tmp-prod_snapshot_20240101-0e0e0e0e', 'prod_snapshot_20240102-bbbbbbbb']);
  });

  it('in S3, removes an expired snapshot when the role may not list multipart uploads (403), and says they were not checked', async () => {
    const s3 = await new OwnS3Server().start();
    const bucket = `spec-ret-${randomBytes(4).toString('hex')}`;
    await s3.createBucket(bucket);
    Object.assign(process.env, S3_TEST_CREDENTIALS);
    // What AWS answers a policy without s3:ListBucketMultipartUploads; everything else goes through
    // to s3rver unchanged (the Host header too, so the signature holds).
    const target = new URL(s3.endpoint);
    let denied = 0;
    const proxy: Server = createServer((req, res) => {
      if (req.method === 'GET' && new URL(req.url ?? '/', 'http://proxy').searchParams.has('uploads')) {
        denied += 1;
        req.resume();
        res.writeHead(403, { 'content-type': 'application/xml' });
        res.end('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message><RequestId>spec</RequestId></Error>');
        return;
      }
      const upstream = request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      });
      upstream.on('error', () => res.destroy());
      req.pipe(upstream);
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const store = new S3SnapshotStore({ bucket, endpoint: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`, region: 'us-east-1', forcePathStyle: true });
    try {
      const write = async (snapshotId: string, createdAt: number, commit = true) => {
        const upload = await store.begin(snapshotId);
        await upload.put('0001_a.csv', Readable.from(['id\n1\n']));
        if (commit) await upload.commit(Buffer.from(JSON.stringify({ snapshotId, createdAt: new Date(createdAt).toISOString() })));
      };
      await write('20240101-aaaaaaaa', Date.now() - 10 * DAY); // its dumper's publish was refused: never announced
      await write('20240102-bbbbbbbb', Date.now()); // the newest
      await write('20240103-dead0000', Date.now(), false); // a killed dump: no manifest
      for (const id of ['20240101-aaaaaaaa', '20240102-bbbbbbbb']) await recordWritten(nc, nats, id);
      await jetstream(nc).publish(`${nats.subjectPrefix}snapshot.ready`, JSON.stringify({ snapshotId: '20240102-bbbbbbbb', location: store.locationOf('20240102-bbbbbbbb') }));

      // Two days on, with a retention of one: the killed dump's objects have been idle long enough.
      expect(await applyRetention(nc, nats, store, DAY, Date.now() + 2 * DAY)).toEqual({
        removed: ['prod_snapshot_20240103-dead0000 (no manifest)', 'prod_snapshot_20240101-aaaaaaaa (never announced)'],
        keptInUse: [],
        notAnnounced: [],
        leftovers: ['unfinished multipart uploads not checked: AccessDenied (grant s3:ListBucketMultipartUploads, or use a lifecycle rule that aborts incomplete multipart uploads)'],
      });
      expect(denied).toBe(2); // list() with an incomplete snapshot, then purgeInterrupted
      expect((await store.list()).map((s) => `${s.snapshotId}:${s.complete}`)).toEqual(['20240102-bbbbbbbb:true']);
    } finally {
      store.destroy();
      await new Promise((resolve) => proxy.close(resolve));
      await s3.stop();
    }
  }, 30_000);

  it('removes nothing when the broker does not answer', async () => {
    const server = await OwnNatsServer.start();
    const own = await connect({ servers: server.url, maxReconnectAttempts: -1, reconnectTimeWait: 200 });
    try {
      const ownNats = natsConfig('own', server.url);
      await ensureStream(await jetstreamManager(own), ownNats);
      snapshot('20240101-aaaaaaaa', 10);
      snapshot('20240102-bbbbbbbb', 9);
      await jetstream(own).publish(`${ownNats.subjectPrefix}snapshot.ready`, JSON.stringify({ snapshotId: '20240101-aaaaaaaa' }));
      await server.stop();
      await expect(applyRetention(own, ownNats, new FsSnapshotStore(dir), 7 * DAY)).rejects.toThrow();
      expect(listing()).toEqual(['prod_snapshot_20240101-aaaaaaaa', 'prod_snapshot_20240102-bbbbbbbb']);
    } finally {
      await own.close().catch(() => undefined);
      await server.destroy();
    }
  }, 30_000);
});

/** One store, and what a dumper killed in the middle of an object leaves of that object in it. */
interface StoreUnderTest {
  store: SnapshotStore;
  /** Leaves what a killed upload leaves of an object it never finished; returns whether that is still stored (undefined: the server cannot tell). */
  leaveUnfinishedObject(snapshotId: string): Promise<() => Promise<boolean | undefined>>;
  teardown(): Promise<void>;
}

const STORES: Record<'fs' | 'nats' | 's3', (nc: NatsConnection) => Promise<StoreUnderTest>> = {
  fs: () => {
    const root = mkdtempSync(join(tmpdir(), 'spec-retention-leftovers-'));
    return Promise.resolve({
      store: new FsSnapshotStore(root),
      leaveUnfinishedObject: (snapshotId) => {
        const path = join(root, `.tmp-prod_snapshot_${snapshotId}`, '0002_b.csv');
        writeFileSync(path, 'id\n1\n2\n');
        return Promise.resolve(() => Promise.resolve(existsSync(path)));
      },
      teardown: () => Promise.resolve(rmSync(root, { recursive: true, force: true })),
    });
  },
  nats: async (nc) => {
    const bucket = `spec_ret_${randomBytes(4).toString('hex')}`;
    const store = await NatsSnapshotStore.open(nc, { bucket, replicas: 1, create: true });
    return {
      store,
      // A put killed mid-object: chunks published under a fresh id, the metadata naming them never written.
      leaveUnfinishedObject: async () => {
        const subject = `$O.${bucket}.C.killed${randomBytes(6).toString('hex')}`;
        await jetstream(nc).publish(subject, Buffer.alloc(128 * 1024, 0x61));
        return async () => subject in ((await (await jetstreamManager(nc)).streams.info(`OBJ_${bucket}`, { subjects_filter: subject })).state.subjects ?? {});
      },
      teardown: async () => {
        await (await jetstreamManager(nc)).streams.delete(`OBJ_${bucket}`).catch(() => undefined);
      },
    };
  },
  s3: async () => {
    const server = await new OwnS3Server().start();
    const bucket = `spec-ret-${randomBytes(4).toString('hex')}`;
    await server.createBucket(bucket);
    Object.assign(process.env, S3_TEST_CREDENTIALS);
    const client = server.client();
    return {
      store: new S3SnapshotStore({ bucket, endpoint: server.endpoint, region: 'us-east-1', forcePathStyle: true }),
      // A multipart upload killed between parts: started, one part stored, never completed nor aborted.
      leaveUnfinishedObject: async (snapshotId) => {
        const Key = `prod_snapshot_${snapshotId}/0002_b.csv`;
        const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key }));
        await client.send(new UploadPartCommand({ Bucket: bucket, Key, UploadId, PartNumber: 1, Body: Buffer.alloc(5 * 1024 * 1024, 0x61) }));
        // s3rver lists neither uploads nor parts: whether it is still there cannot be seen.
        return () => Promise.resolve(undefined);
      },
      teardown: async () => {
        client.destroy();
        await server.stop();
      },
    };
  },
};

/** How each store reports what it cleaned below the level of objects (s3rver cannot list multipart uploads). */
const LEFTOVER_LINES: Record<keyof typeof STORES, string[]> = {
  fs: [],
  nats: ['1 unfinished Object Store object(s): chunks purged'],
  s3: ['unfinished multipart uploads not checked: this S3 server does not list them (NotImplemented)'],
};

describe.each(Object.keys(STORES) as (keyof typeof STORES)[])('applyRetention in the %s store: leftovers of interrupted uploads (real servers)', (kind) => {
  /** Nothing written to the interrupted upload for this long before retention runs; the fresh one was written within it. */
  const RETENTION_MS = 4_000;
  let nc: NatsConnection;
  let nats: NatsConfig;
  let subject: StoreUnderTest;

  beforeAll(async () => {
    nc = await connect({ servers: NATS_URL });
    nats = natsConfig(`leftovers_${kind}_${randomBytes(4).toString('hex')}`);
    await ensureStream(await jetstreamManager(nc), nats);
    subject = await STORES[kind](nc);
  });
  afterAll(async () => {
    await subject?.teardown();
    const jsm = await jetstreamManager(nc);
    await jsm.streams.delete(nats.stream).catch(() => undefined);
    await jsm.streams.delete(`KV_${announcementBucket(nats)}`).catch(() => undefined);
    await nc.close();
  });

  const writeComplete = async (snapshotId: string, ageDays: number) => {
    const upload = await subject.store.begin(snapshotId);
    await upload.put('0001_a.csv', Readable.from(['id\n1\n']));
    await upload.commit(Buffer.from(JSON.stringify({ snapshotId, createdAt: new Date(Date.now() - ageDays * DAY).toISOString() })));
    await jetstream(nc).publish(`${nats.subjectPrefix}snapshot.ready`, JSON.stringify({ snapshotId, location: upload.location }));
  };
  const ids = async () => (await subject.store.list()).map((s) => `${s.snapshotId}:${s.complete ? 'complete' : 'incomplete'}`).sort();

  it('removes an interrupted upload once idle for SNAPSHOT_RETENTION, keeps an unacked snapshot, and never touches an upload in progress', async () => {
    await writeComplete('20240101-aaaaaaaa', 10); // expired, but dev has not acked it
    await writeComplete('20240102-bbbbbbbb', 9); // the newest
    const jsm = await jetstreamManager(nc);
    await jsm.consumers.add(nats.stream, { durable_name: 'loader-dev', filter_subject: `${nats.subjectPrefix}snapshot.ready`, ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All });
    const held = await (await jetstream(nc).consumers.get(nats.stream, 'loader-dev')).next({ expires: 2_000 });
    expect(held).not.toBeNull();

    // A dump killed mid-upload: one table's object written, the next one cut off, no manifest.
    const killed = await subject.store.begin('20240103-dead0000');
    await killed.put('0001_a.csv', Readable.from(['id\n1\n']));
    const unfinishedOfKilled = await subject.leaveUnfinishedObject('20240103-dead0000');
    await new Promise((resolve) => setTimeout(resolve, RETENTION_MS + 2_000));

    // A dump running now in another dumper: one object written, the next one being streamed.
    const running = await subject.store.begin('20240104-a11e0000');
    await running.put('0001_a.csv', Readable.from(['id\n1\n']));
    const body = new PassThrough();
    const streaming = running.put('0002_b.csv', body);
    body.write(Buffer.alloc(300 * 1024, 0x62));
    // Let the store take the first chunks in (two Object Store chunks, a file's first write).
    await new Promise((resolve) => setTimeout(resolve, 1_000));

    const first = await applyRetention(nc, nats, subject.store, RETENTION_MS);
    expect(first.keptInUse).toEqual(['prod_snapshot_20240101-aaaaaaaa']);
    expect(first.leftovers).toEqual(LEFTOVER_LINES[kind]);
    expect(await unfinishedOfKilled()).toBe(kind === 's3' ? undefined : false);
    // In the Object Store an object being written names no snapshot yet, so the killed upload's
    // objects wait until no upload is running; elsewhere they go at once.
    expect(first.removed).toEqual(kind === 'nats' ? [] : [kind === 'fs' ? '.tmp-prod_snapshot_20240103-dead0000' : 'prod_snapshot_20240103-dead0000 (no manifest)']);

    body.end(Buffer.from('\n'));
    await streaming;
    const second = await applyRetention(nc, nats, subject.store, RETENTION_MS);
    expect(second.keptInUse).toEqual(['prod_snapshot_20240101-aaaaaaaa']);
    expect([...first.removed, ...second.removed]).toEqual([kind === 'fs' ? '.tmp-prod_snapshot_20240103-dead0000' : 'prod_snapshot_20240103-dead0000 (no manifest)']);
    expect(await ids()).toEqual(['20240101-aaaaaaaa:complete', '20240102-bbbbbbbb:complete', '20240104-a11e0000:incomplete']);

    // The upload that was running finishes whole: nothing of it was taken away.
    await running.commit(Buffer.from(JSON.stringify({ snapshotId: '20240104-a11e0000', createdAt: new Date().toISOString() })));
    const source = await subject.store.open(running.location);
    expect(await source.storedSize('0002_b.csv')).toBe(300 * 1024 + 1);
    expect(Buffer.concat(await (await source.open('0002_b.csv')).toArray())).toHaveLength(300 * 1024 + 1);
    held!.nak();
  }, 60_000);
});
