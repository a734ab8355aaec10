import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { createServer, type IncomingMessage, request as httpRequest, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { NATS_URL } from '../../../../test/support/nats';
import { OwnS3Server, S3_TEST_CREDENTIALS } from '../../../../test/support/s3-server';
import { FsSnapshotStore } from './fs-snapshot-store';
import { NatsSnapshotStore } from './nats-snapshot-store';
import { S3SnapshotStore } from './s3-snapshot-store';
import { parseBucketLocation, SnapshotLocationError, type SnapshotStore, SnapshotStoreMismatchError } from './snapshot-store';

const ID = '20240105-1a2b3c4d';
const OTHER_ID = '20240106-0badf00d';

async function text(stream: Readable): Promise<string> {
  return Buffer.concat(await stream.toArray()).toString('utf8');
}

/** 3 MB of CSV-like text: several Object Store chunks and more than one read buffer. */
function bigBody(): Buffer {
  return Buffer.from('id,name\n' + Array.from({ length: 150_000 }, (_, i) => `${i},name-${i}`).join('\n') + '\n');
}

interface StoreFixture {
  name: string;
  setup(): Promise<SnapshotStore>;
  teardown(): Promise<void>;
  otherLocation: string;
}

let nc: NatsConnection;
let s3: OwnS3Server;
const fsRoot = mkdtempSync(join(tmpdir(), 'fs-store-'));
const natsBucket = `spec_${randomBytes(4).toString('hex')}`;
const s3Bucket = `spec-${randomBytes(4).toString('hex')}`;

const fixtures: StoreFixture[] = [
  {
    name: 'fs',
    setup: () => Promise.resolve(new FsSnapshotStore(fsRoot)),
    teardown: () => Promise.resolve(rmSync(fsRoot, { recursive: true, force: true })),
    otherLocation: '/elsewhere/not_a_snapshot',
  },
  {
    name: 'nats',
    setup: async () => {
      nc = await connect({ servers: NATS_URL });
      return NatsSnapshotStore.open(nc, { bucket: natsBucket, replicas: 1, create: true });
    },
    teardown: async () => {
      await (await jetstreamManager(nc)).streams.delete(`OBJ_${natsBucket}`).catch(() => undefined);
      await nc.close();
    },
    otherLocation: `nats://another-bucket/prod_snapshot_${ID}`,
  },
  {
    name: 's3',
    setup: async () => {
      s3 = await new OwnS3Server().start();
      await s3.createBucket(s3Bucket);
      Object.assign(process.env, S3_TEST_CREDENTIALS);
      return new S3SnapshotStore({ bucket: s3Bucket, endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true });
    },
    teardown: async () => s3.stop(),
    otherLocation: `s3://${s3Bucket}/prod_snapshot_${ID}/../secrets`,
  },
];

describe.each(fixtures)('$name snapshot store', (fixture) => {
  let store: SnapshotStore;
  beforeAll(async () => {
    store = await fixture.setup();
  }, 30_000);
  afterAll(() => fixture.teardown());

  it('shows a snapshot only once its manifest is committed, and reads back every byte', async () => {
    const body = bigBody();
    const upload = await store.begin(ID);
    expect((await upload.put('0001_public.t.csv', Readable.from([body]))).storedBytes).toBe(body.length);
    expect(await store.list()).toEqual([expect.objectContaining({ snapshotId: ID, complete: false })]);
    await expect(store.open(upload.location).then((s) => s.manifest())).rejects.toMatchObject({ code: 'ENOENT' });

    await upload.commit(Buffer.from('{"snapshotId":"x"}'));
    expect(await store.list()).toEqual([expect.objectContaining({ snapshotId: ID, complete: true })]);
    const source = await store.open(upload.location);
    expect((await source.manifest()).toString()).toBe('{"snapshotId":"x"}');
    expect(await source.storedSize('0001_public.t.csv')).toBe(body.length);
    expect(await source.storedSize('missing.csv')).toBeUndefined();
    expect(await text(await source.open('0001_public.t.csv'))).toBe(body.toString());
    await expect(source.open('missing.csv')).rejects.toMatchObject({ code: 'ENOENT' });
  }, 60_000);

  it('refuses locations that are not one of its snapshots, and object names with paths', async () => {
    await expect(store.open(fixture.otherLocation)).rejects.toBeInstanceOf(SnapshotLocationError);
    const upload = await store.begin(OTHER_ID);
    await expect(upload.put('../escape.csv', Readable.from(['x']))).rejects.toBeInstanceOf(SnapshotLocationError);
    await upload.abort();
  });

  it('aborts an upload without leaving anything behind, and removes committed snapshots whole', async () => {
    const upload = await store.begin(OTHER_ID);
    await upload.put('0001_a.csv', Readable.from(['a\n']));
    await upload.abort();
    expect((await store.list()).map((s) => s.snapshotId)).toEqual([ID]);

    await store.remove(ID);
    expect(await store.list()).toEqual([]);
  }, 30_000);

  it('fails the upload when the source stream fails, and leaves no complete snapshot', async () => {
    const upload = await store.begin(OTHER_ID);
    const failing = new Readable({
      read() {
        this.push(Buffer.alloc(200_000, 'x'));
        this.destroy(new Error('COPY broke'));
      },
    });
    await expect(upload.put('0001_a.csv', failing)).rejects.toThrow('COPY broke');
    await upload.abort();
    expect((await store.list()).filter((s) => s.complete)).toEqual([]);
  }, 30_000);
});

describe('nats snapshot store: the Object Store digest and orphan chunks', () => {
  const bucket = `spec_${randomBytes(4).toString('hex')}`;
  let conn: NatsConnection;
  let store: NatsSnapshotStore;
  beforeAll(async () => {
    conn = await connect({ servers: NATS_URL });
    store = await NatsSnapshotStore.open(conn, { bucket, replicas: 1, create: true });
  });
  afterAll(async () => {
    await (await jetstreamManager(conn)).streams.delete(`OBJ_${bucket}`).catch(() => undefined);
    await conn.close();
  });

  it('fails the read of a tampered object while streaming it', async () => {
    const upload = await store.begin(ID);
    await upload.put('0001_t.csv', Readable.from([bigBody()]));
    await upload.commit(Buffer.from('{}'));
    // Tamper: replace the object's last chunk by another of the same size, behind the client's back.
    const jsm = await jetstreamManager(conn);
    const info = await jsm.streams.info(`OBJ_${bucket}`, { subjects_filter: `$O.${bucket}.C.>` });
    const [chunkSubject] = Object.keys(info.state.subjects ?? {});
    const last = await jsm.streams.getMessage(`OBJ_${bucket}`, { last_by_subj: chunkSubject });
    const forged = Buffer.from(last!.data);
    forged[0] = forged[0] === 0x41 ? 0x42 : 0x41;
    await jsm.streams.deleteMessage(`OBJ_${bucket}`, last!.seq);
    const { jetstream } = await import('@nats-io/jetstream');
    await jetstream(conn).publish(chunkSubject, forged);

    const source = await store.open(upload.location);
    await expect(text(await source.open('0001_t.csv'))).rejects.toThrow(/digests do not match/);
  }, 60_000);

  it('purges chunks no object points at (an upload killed mid-object) once idle, never those of an object still being written', async () => {
    const { jetstream } = await import('@nats-io/jetstream');
    await jetstream(conn).publish(`$O.${bucket}.C.orphan${randomBytes(4).toString('hex')}`, Buffer.alloc(1000));
    const unfinishedChunks = async () => Object.keys((await (await jetstreamManager(conn)).streams.info(`OBJ_${bucket}`, { subjects_filter: `$O.${bucket}.C.>` })).state.subjects ?? {}).length;
    const before = await unfinishedChunks();
    // Written a moment ago: as far as anyone can tell, an upload still running.
    expect(await store.purgeInterrupted(new Date(Date.now() - 60_000))).toEqual([]);
    expect(await unfinishedChunks()).toBe(before);
    expect(await store.purgeInterrupted(new Date(Date.now() + 1_000))).toEqual(['1 unfinished Object Store object(s): chunks purged']);
    expect(await unfinishedChunks()).toBe(before - 1);
    // The committed snapshot's chunks are not orphans, however old.
    expect(await store.purgeInterrupted(new Date(Date.now() + 1_000))).toEqual([]);
    const source = await store.open(store.locationOf(ID));
    expect((await source.storedSize('0001_t.csv'))).toBeGreaterThan(0);
  });
});

describe('fs snapshot store: only the snapshot directory\'s own regular files are read', () => {
  const root = mkdtempSync(join(tmpdir(), 'fs-links-'));
  const outside = mkdtempSync(join(tmpdir(), 'fs-links-outside-'));
  const store = new FsSnapshotStore(root);
  afterAll(() => {
    rmSync(root, { recursive: true, force: true });
    rmSync(outside, { recursive: true, force: true });
  });

  it('refuses a manifest.json or table file that is a symbolic link out of the snapshot (retention reads the manifest this way)', async () => {
    const dir = join(root, `prod_snapshot_${ID}`);
    mkdirSync(dir);
    // A manifest that would pass for this snapshot's, and a file that is not the snapshot's at all.
    writeFileSync(join(outside, 'manifest.json'), JSON.stringify({ snapshotId: ID, createdAt: '2024-01-05T00:00:00.000Z' }));
    writeFileSync(join(outside, 'secret.csv'), 'not,a,snapshot\n');
    symlinkSync(join(outside, 'manifest.json'), join(dir, 'manifest.json'));
    symlinkSync(join(outside, 'secret.csv'), join(dir, '0001_public.a.csv'));
    writeFileSync(join(dir, '0002_public.b.csv'), 'id\n1\n');
    const source = await store.open(store.locationOf(ID));
    await expect(source.manifest()).rejects.toThrow(/manifest\.json leads outside the snapshot directory \(a symbolic link\)/);
    await expect(source.open('0001_public.a.csv')).rejects.toThrow(/0001_public\.a\.csv in .* leads outside the snapshot directory/);
    await expect(source.storedSize('0001_public.a.csv')).rejects.toThrow(/leads outside the snapshot directory/);
    // The snapshot's own regular files are read as before.
    expect(await text(await source.open('0002_public.b.csv'))).toBe('id\n1\n');
    expect(await source.storedSize('0002_public.b.csv')).toBe(5);
    expect(await source.storedSize('0003_public.c.csv')).toBeUndefined();
  });
});

describe('fs snapshot store: a removal that stops part-way', () => {
  const root = mkdtempSync(join(tmpdir(), 'fs-remove-'));
  const store = new FsSnapshotStore(root);
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  /** Makes rm fail on a file: immutable for root (who ignores modes), in a read-only directory for anyone else. Undone wherever the directory went. */
  function undeletable(dir: string, file: string): (movedTo: string) => void {
    if (process.getuid?.() === 0) {
      execFileSync('chattr', ['+i', join(dir, file)]);
      return (movedTo) => execFileSync('chattr', ['-i', join(movedTo, file)]);
    }
    chmodSync(dir, 0o500);
    return (movedTo) => chmodSync(movedTo, 0o700);
  }

  it('leaves nothing a loader could take for the snapshot, and the next removal finishes it', async () => {
    const upload = await store.begin(ID);
    for (const object of ['0001_public.a.csv', '0002_public.b.csv', '0003_public.c.csv']) await upload.put(object, Readable.from(['1\n']));
    await upload.commit(Buffer.from(`{"snapshotId":"${ID}"}`));
    const release = undeletable(upload.location, '0002_public.b.csv');
    const outcome = await store.remove(ID).then(
      () => 'removed',
      () => 'failed',
    );
    release(existsSync(upload.location) ? upload.location : join(root, `.tmp-prod_snapshot_${ID}`));
    expect(outcome).toBe('failed');
    await expect(store.open(upload.location)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await store.list()).toEqual([expect.objectContaining({ snapshotId: ID, complete: false, storedAs: `.tmp-prod_snapshot_${ID}` })]);

    await store.remove(ID);
    expect(readdirSync(root)).toEqual([]);
  });

  it("lists a snapshot's directory without its manifest (an older version's interrupted removal) as a leftover, never as a snapshot", async () => {
    const dir = join(root, `prod_snapshot_${OTHER_ID}`);
    mkdirSync(dir);
    writeFileSync(join(dir, '0001_public.a.csv'), '1\n');
    expect(await store.list()).toEqual([expect.objectContaining({ snapshotId: OTHER_ID, complete: false, storedAs: `prod_snapshot_${OTHER_ID} (no manifest)` })]);
    await store.remove(OTHER_ID);
    expect(existsSync(dir)).toBe(false);
    expect(readdirSync(root)).toEqual([]);
  });

  it('fails the listing when a manifest cannot be looked at (an I/O error, not its absence): a complete snapshot is never taken for a leftover', async () => {
    const dir = join(root, `prod_snapshot_${OTHER_ID}`);
    mkdirSync(dir);
    writeFileSync(join(dir, '0001_public.a.csv'), '1\n');
    symlinkSync('manifest.json', join(dir, 'manifest.json')); // stat fails with ELOOP
    await expect(store.list()).rejects.toMatchObject({ code: 'ELOOP' });
    expect(existsSync(join(dir, '0001_public.a.csv'))).toBe(true);
    rmSync(dir, { recursive: true });
  });
});

describe('s3 snapshot store: an S3 server that refuses to delete', () => {
  let server: OwnS3Server;
  let refusing: Server;
  let store: S3SnapshotStore;
  const bucket = `spec-${randomBytes(4).toString('hex')}`;

  beforeAll(async () => {
    server = await new OwnS3Server().start();
    await server.createBucket(bucket);
    Object.assign(process.env, S3_TEST_CREDENTIALS);
    // In front of the real server: DeleteObjects answers 200 listing every key as refused, as S3
    // does under a deny policy or Object Lock (s3rver itself never refuses); the rest passes through.
    const upstream = new URL(server.endpoint);
    refusing = createServer((req, res) => {
      if (req.method === 'POST' && new URL(req.url ?? '/', 'http://x').searchParams.has('delete')) {
        void text(req).then((body) => {
          const errors = [...body.matchAll(/<Key>([^<]*)<\/Key>/g)].map(([, key]) => `<Error><Key>${key}</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error>`);
          res.writeHead(200, { 'content-type': 'application/xml' }).end(`<?xml version="1.0" encoding="UTF-8"?><DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">${errors.join('')}</DeleteResult>`);
        });
        return;
      }
      req.pipe(httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (upstreamRes) => {
        res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.headers);
        upstreamRes.pipe(res);
      }));
    });
    await new Promise<void>((resolve) => refusing.listen(0, '127.0.0.1', resolve));
    const { port } = refusing.address() as AddressInfo;
    store = new S3SnapshotStore({ bucket, endpoint: `http://127.0.0.1:${port}`, region: 'us-east-1', forcePathStyle: true });
  }, 30_000);
  afterAll(async () => {
    store.destroy();
    await new Promise((resolve) => refusing.close(resolve));
    await server.stop();
  });

  it('fails the removal naming the refusal, and the snapshot stays complete', async () => {
    const upload = await store.begin(ID);
    await upload.put('0001_a.csv', Readable.from(['a\n']));
    await upload.commit(Buffer.from(`{"snapshotId":"${ID}"}`));

    await expect(store.remove(ID)).rejects.toThrow(`S3 refused to delete 1 of 1 object(s) in bucket ${bucket}, the first prod_snapshot_${ID}/manifest.json: AccessDenied (Access Denied)`);
    expect(await store.list()).toEqual([expect.objectContaining({ snapshotId: ID, complete: true })]);
  }, 30_000);
});

describe('s3 snapshot store: an endpoint that never answers Expect: 100-continue (a proxy, an S3-compatible server)', () => {
  it('uploads a multipart part (2 MiB and more) at once, well within the request timeout', async () => {
    const server = await new OwnS3Server().start();
    const bucket = `spec-${randomBytes(4).toString('hex')}`;
    await server.createBucket(bucket);
    Object.assign(process.env, S3_TEST_CREDENTIALS);
    // Node answers 100 Continue by itself unless 'checkContinue' is handled: this one never does,
    // and forwards the request (without the header) once its body arrives.
    const upstream = new URL(server.endpoint);
    const forward = (req: IncomingMessage, res: ServerResponse) => {
      const headers = { ...req.headers };
      delete headers.expect;
      req.pipe(httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers }, (upstreamRes) => {
        res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.headers);
        upstreamRes.pipe(res);
      }));
    };
    const silent = createServer(forward).on('checkContinue', forward);
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const store = new S3SnapshotStore({ bucket, endpoint: `http://127.0.0.1:${(silent.address() as AddressInfo).port}`, region: 'us-east-1', forcePathStyle: true, requestTimeoutMs: 5_000 });
    try {
      const started = Date.now();
      const upload = await store.begin(ID);
      const body = randomBytes(9 * 1024 * 1024);
      await upload.put('0001_big.csv', Readable.from([body]));
      await upload.commit(Buffer.from(`{"snapshotId":"${ID}"}`));
      // Waiting for a 100 Continue that never comes took the whole request timeout, every try.
      expect(Date.now() - started).toBeLessThan(5_000);
      const read = await (await store.open(store.locationOf(ID))).open('0001_big.csv');
      expect(Buffer.concat(await read.toArray()).equals(body)).toBe(true);
    } finally {
      store.destroy();
      await new Promise((resolve) => silent.close(resolve));
      await server.stop();
    }
  }, 60_000);
});

describe('a location of another store or bucket', () => {
  const id = '20240101-0a0a0a0a';
  it('is a configuration mismatch naming both stores; a location that is no snapshot stays a bad message', () => {
    const mismatch = (location: string, scheme: 'nats' | 's3', bucket: string) => {
      try {
        parseBucketLocation(location, scheme, bucket);
      } catch (error) {
        return error;
      }
      throw new Error(`${location} was taken`);
    };
    expect(mismatch(`nats://theirs/prod_snapshot_${id}`, 'nats', 'ours')).toMatchObject({
      code: 'store-mismatch',
      message: `snapshot nats://theirs/prod_snapshot_${id} is in the nats store (bucket theirs), and this loader reads the nats store (bucket ours): set SNAPSHOT_STORE and SNAPSHOT_BUCKET as the dumper's`,
    });
    expect(mismatch(`/srv/snapshots/prod_snapshot_${id}`, 's3', 'ours')).toMatchObject({ code: 'store-mismatch', message: expect.stringContaining('is in the fs store (SNAPSHOT_DIR)') });
    for (const forged of [`s3://theirs/prod_snapshot_${id}/../secrets`, 'nats://theirs/anything', '/etc/passwd']) {
      const error = mismatch(forged, 'nats', 'ours');
      expect(error).toBeInstanceOf(SnapshotLocationError);
      expect(error).not.toBeInstanceOf(SnapshotStoreMismatchError);
    }
  });
});
