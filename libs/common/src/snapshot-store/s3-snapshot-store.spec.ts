import { randomBytes } from 'node:crypto';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { OwnS3Server, S3_TEST_CREDENTIALS } from '../../../../test/support/s3-server';
import { describeFailure } from '../observability/failure';
import { isTransientError } from '../resilience/retry';
import { S3SnapshotStore } from './s3-snapshot-store';

const ID = '20240107-0a1b2c3d';

/** An S3 endpoint of the test's own that answers every request with `status` and `code`. */
async function answering(status: number, code: string): Promise<{ endpoint: string; close(): Promise<void> }> {
  const server: Server = createServer((req, res: ServerResponse) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(status, { 'Content-Type': 'application/xml' });
      res.end(req.method === 'HEAD' ? undefined : `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${code} here</Message><RequestId>spec</RequestId></Error>`);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('s3 snapshot store: a bucket that does not exist, or an S3 that refuses', () => {
  let s3: OwnS3Server;
  const present = `fx-s3-here-${randomBytes(4).toString('hex')}`;
  const missing = `fx-s3-none-${randomBytes(4).toString('hex')}`;
  const stores: S3SnapshotStore[] = [];
  const storeAt = (bucket: string, endpoint: string) => {
    const store = new S3SnapshotStore({ bucket, endpoint, region: 'us-east-1', forcePathStyle: true });
    stores.push(store);
    return store;
  };

  beforeAll(async () => {
    Object.assign(process.env, S3_TEST_CREDENTIALS);
    s3 = await new OwnS3Server().start();
    await s3.createBucket(present);
  });
  afterAll(async () => {
    for (const store of stores) store.destroy();
    await s3.stop();
  });

  it('checks the bucket at boot: one that does not exist is an error naming SNAPSHOT_BUCKET and the endpoint, never the credentials', async () => {
    await expect(storeAt(present, s3.endpoint).checkBucket()).resolves.toBeUndefined();
    const failure = await storeAt(missing, s3.endpoint)
      .checkBucket()
      .then(() => undefined, (error: unknown) => error as Error & { code?: string });
    expect(failure).toBeInstanceOf(Error);
    expect(failure!.message).toMatch(new RegExp(`^SNAPSHOT_BUCKET ${missing} does not exist at S3_ENDPOINT ${s3.endpoint}: db-fanout does not create S3 buckets`));
    expect(failure!.code).toBe('NoSuchBucket');
    expect(failure!.message).not.toContain(S3_TEST_CREDENTIALS.AWS_SECRET_ACCESS_KEY);
  });

  it('only warns at boot when the bucket cannot be checked: a 403 (names s3:ListBucket), an endpoint that is down', async () => {
    const forbidden = await answering(403, 'AccessDenied');
    try {
      const warning = await storeAt(present, forbidden.endpoint).checkBucket();
      expect(warning).toContain(`SNAPSHOT_BUCKET ${present} at S3_ENDPOINT ${forbidden.endpoint} not checked at boot: HeadBucket answered 403 (grant s3:ListBucket on arn:aws:s3:::${present}`);
    } finally {
      await forbidden.close();
    }
    const down = `http://127.0.0.1:${await closedPort()}`;
    const warning = await storeAt(present, down).checkBucket();
    expect(warning).toMatch(new RegExp(`^SNAPSHOT_BUCKET ${present} at S3_ENDPOINT ${down} not checked at boot: .*ECONNREFUSED.*; starting anyway`));
  });

  it("names the bucket and the key in an operation's error, with the S3 error code: a missing bucket is permanent", async () => {
    const store = storeAt(missing, s3.endpoint);
    const upload = await store.begin(ID);
    const failure = await upload.put('0001_public.t.csv', Readable.from([Buffer.from('id\n1\n')])).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(failure).toMatchObject({
      code: 'NoSuchBucket',
      message: `S3 upload of prod_snapshot_${ID}/0001_public.t.csv in SNAPSHOT_BUCKET ${missing} failed: NoSuchBucket (The specified bucket does not exist)`,
    });
    expect(isTransientError(failure)).toBe(false);
    // What snapshot.failed carries: the code, and the bucket in the error.
    expect(describeFailure(failure, { detail: false })).toEqual({ code: 'NoSuchBucket', error: expect.stringContaining(`SNAPSHOT_BUCKET ${missing}`) as unknown });
    await expect(upload.commit(Buffer.from('{}'))).rejects.toMatchObject({ code: 'NoSuchBucket', message: expect.stringContaining(`PutObject of prod_snapshot_${ID}/manifest.json in SNAPSHOT_BUCKET ${missing}`) as unknown });
    await expect(store.list()).rejects.toMatchObject({ code: 'NoSuchBucket', message: expect.stringContaining(`S3 ListObjectsV2 of SNAPSHOT_BUCKET ${missing} failed`) as unknown });
  });

  it('keeps an S3 that is throttling or failing (503 SlowDown, 500 InternalError) transient, and a refusal (403) permanent, all named', async () => {
    for (const [status, code, transient] of [
      [503, 'SlowDown', true],
      [500, 'InternalError', true],
      [403, 'AccessDenied', false],
    ] as const) {
      const server = await answering(status, code);
      try {
        const failure = await storeAt(present, server.endpoint)
          .list()
          .then(() => undefined, (error: unknown) => error);
        expect(failure).toMatchObject({ code, message: `S3 ListObjectsV2 of SNAPSHOT_BUCKET ${present} failed: ${code} (${code} here)` });
        expect([code, isTransientError(failure)]).toEqual([code, transient]);
      } finally {
        await server.close();
      }
    }
  }, 30_000);
});
