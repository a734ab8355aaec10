import { randomBytes } from 'node:crypto';
import { jetstream, jetstreamManager, JetStreamApiError } from '@nats-io/jetstream';
import { Objm, type ObjectStore } from '@nats-io/obj';
import { connect, errors, type NatsConnection } from '@nats-io/transport-node';
import { isTransientError } from '../resilience/retry';
import { infoWithRetry } from './nats-snapshot-store';
import { ObjectDigestError, readObjectChunks } from './nats-object-reader';

const NATS_URL = process.env.TEST_NATS_URL ?? 'nats://127.0.0.1:4222';

describe('readObjectChunks (an Object Store object through an ordered pull consumer)', () => {
  const bucket = `reader-spec-${randomBytes(4).toString('hex')}`;
  let nc: NatsConnection;
  let objects: ObjectStore;
  const read = async (name: string, digest?: string) => {
    const info = (await objects.info(name))!;
    const stream = readObjectChunks(jetstream(nc), `OBJ_${bucket}`, `$O.${bucket}.C.${info.nuid}`, { name: info.name, size: info.size, digest: digest ?? info.digest });
    return Buffer.concat(await stream.toArray());
  };

  beforeAll(async () => {
    nc = await connect({ servers: NATS_URL });
    objects = await new Objm(nc).create(bucket);
  });
  afterAll(async () => {
    await (await jetstreamManager(nc)).streams.delete(`OBJ_${bucket}`).catch(() => undefined);
    await nc.close();
  });

  it('reads an object of many chunks back byte for byte, and an empty one', async () => {
    const body = randomBytes(3 * 128 * 1024 + 1234);
    await objects.putBlob({ name: 'many' }, body);
    await objects.putBlob({ name: 'empty' }, new Uint8Array(0));
    expect((await read('many')).equals(body)).toBe(true);
    expect(await read('empty')).toHaveLength(0);
  });

  it('reads the whole object when its consumer disappears mid-read (a node holding it died)', async () => {
    const body = randomBytes(40 * 128 * 1024);
    await objects.putBlob({ name: 'interrupted' }, body);
    const info = (await objects.info('interrupted'))!;
    const timings = { pullExpiresMs: 1_000, idleMs: 1_500, giveUpMs: 20_000 };
    const stream = readObjectChunks(jetstream(nc), `OBJ_${bucket}`, `$O.${bucket}.C.${info.nuid}`, info, timings);
    const received: Buffer[] = [];
    const jsm = await jetstreamManager(nc);
    for await (const chunk of stream) {
      received.push(chunk as Buffer);
      if (received.length === 10) {
        for await (const consumer of jsm.consumers.list(`OBJ_${bucket}`)) await jsm.consumers.delete(`OBJ_${bucket}`, consumer.name);
      }
    }
    expect(Buffer.concat(received).equals(body)).toBe(true);
  }, 30_000);

  it('leaves no consumer on the server once a read ends, or is stopped part-way', async () => {
    const jsm = await jetstreamManager(nc);
    const body = randomBytes(20 * 128 * 1024);
    await objects.putBlob({ name: 'left-behind' }, body);
    // This object's readers only: the test above deletes consumers mid-read, and nats.js may still
    // be making a replacement of its own for that read (see the note in nats-object-reader.ts).
    const chunks = `$O.${bucket}.C.${(await objects.info('left-behind'))!.nuid}`;
    const consumers = async () => {
      const names: string[] = [];
      for await (const consumer of jsm.consumers.list(`OBJ_${bucket}`)) if (consumer.config.filter_subject === chunks) names.push(consumer.name);
      return names;
    };
    expect((await read('left-behind')).equals(body)).toBe(true);
    // A header check: one chunk read, then the stream destroyed.
    const info = (await objects.info('left-behind'))!;
    const partial = readObjectChunks(jetstream(nc), `OBJ_${bucket}`, `$O.${bucket}.C.${info.nuid}`, info);
    for await (const chunk of partial) {
      expect(chunk).toHaveLength(128 * 1024);
      break;
    }
    // Deleted without being awaited by the reader: give the requests a moment.
    const deadline = Date.now() + 5_000;
    while ((await consumers()).length && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await consumers()).toEqual([]);
  });

  it('fails the stream when the bytes are not the ones the store recorded', async () => {
    await objects.putBlob({ name: 'other' }, Buffer.from('what was stored'));
    const failure = read('other', `SHA-256=${Buffer.alloc(32).toString('base64url')}=`);
    await expect(failure).rejects.toThrow(ObjectDigestError);
    // Naming the object: with many tables, which one is corrupt.
    await expect(failure).rejects.toThrow(/^other: received a corrupt object, digests do not match/);
  });

  // Chunks purged by an operator or a stream limit: a bad snapshot (not transient: the load fails at
  // once), not a store outage waited out for giveUpMs and then retried for minutes.
  it('fails at once, naming the object, when none of its chunks is left in the stream', async () => {
    await objects.putBlob({ name: 'purged' }, randomBytes(200_003));
    const info = (await objects.info('purged'))!;
    const chunks = `$O.${bucket}.C.${info.nuid}`;
    const jsm = await jetstreamManager(nc);
    await jsm.streams.purge(`OBJ_${bucket}`, { filter: chunks });
    const started = Date.now();
    const failure = readObjectChunks(jetstream(nc), `OBJ_${bucket}`, chunks, info).toArray();
    await expect(failure).rejects.toThrow(ObjectDigestError);
    await expect(failure).rejects.toThrow(/^purged: none of its chunks is in the bucket/);
    expect(isTransientError(await failure.catch((error: unknown) => error))).toBe(false);
    expect(Date.now() - started).toBeLessThan(5_000);
    // Its consumer is not left behind either.
    const deadline = Date.now() + 5_000;
    const left = async () => {
      const names: string[] = [];
      for await (const consumer of jsm.consumers.list(`OBJ_${bucket}`)) if (consumer.config.filter_subject === chunks) names.push(consumer.name);
      return names;
    };
    while ((await left()).length && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await left()).toEqual([]);
  }, 30_000);

  it('fails without waiting out giveUpMs when the chunks still to read are purged part-way', async () => {
    await objects.putBlob({ name: 'purged-tail' }, randomBytes(40 * 128 * 1024));
    const info = (await objects.info('purged-tail'))!;
    const chunks = `$O.${bucket}.C.${info.nuid}`;
    const jsm = await jetstreamManager(nc);
    const timings = { pullExpiresMs: 1_000, idleMs: 1_500, giveUpMs: 20_000 };
    const started = Date.now();
    let received = 0;
    let bytes = 0;
    const read = async () => {
      for await (const chunk of readObjectChunks(jetstream(nc), `OBJ_${bucket}`, chunks, info, timings)) {
        bytes += (chunk as Buffer).length;
        if (++received === 2) await jsm.streams.purge(`OBJ_${bucket}`, { filter: chunks });
      }
    };
    const failure = read();
    await expect(failure).rejects.toThrow(ObjectDigestError);
    await expect(failure).rejects.toThrow(new RegExp(`^purged-tail: its chunks after the ${bytes} bytes read are no longer in the bucket`));
    expect(bytes).toBeLessThan(info.size);
    // The chunks already on their way, one idle wait, then the new consumer finds nothing pending.
    expect(Date.now() - started).toBeLessThan(10_000);
  }, 30_000);
});

describe('infoWithRetry', () => {
  it('asks again when the request timed out (a stream electing its leader), and gives up after the last wait', async () => {
    let calls = 0;
    const flaky = () => (++calls < 3 ? Promise.reject(new errors.TimeoutError()) : Promise.resolve(null));
    await expect(infoWithRetry(flaky, [1, 1, 1])).resolves.toBeNull();
    expect(calls).toBe(3);
    calls = 0;
    await expect(infoWithRetry(() => (++calls, Promise.reject(new errors.TimeoutError())), [1, 1])).rejects.toThrow('timeout');
    expect(calls).toBe(3);
  });

  it('asks again when the stream has no leader yet (JetStream "temporarily unavailable")', async () => {
    let calls = 0;
    const unavailable = () => new JetStreamApiError({ code: 503, err_code: 10008, description: 'JetStream system temporarily unavailable' });
    await expect(infoWithRetry(() => (++calls < 3 ? Promise.reject(unavailable()) : Promise.resolve(null)), [1, 1, 1])).resolves.toBeNull();
    expect(calls).toBe(3);
  });

  it('does not retry other errors', async () => {
    let calls = 0;
    await expect(infoWithRetry(() => (++calls, Promise.reject(new Error('bad bucket'))), [1, 1])).rejects.toThrow('bad bucket');
    expect(calls).toBe(1);
  });
});
