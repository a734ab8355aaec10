import { mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type JsMsg } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { loadDumperConfig, type NatsConfig } from '@app/common/config';
import { ensureStream } from '@app/common/messaging';
import { OwnNatsServer } from '../../../test/support/nats-server';
import { announcementBucket, applyRetention } from './retention';

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
    expect((await applyRetention(nc, nats, dir, 7 * DAY, Date.now() - 35 * DAY)).removed).toEqual([]);
    await (await jetstreamManager(nc)).streams.deleteMessage(nats.stream, dSeq);

    const result = await applyRetention(nc, nats, dir, 7 * DAY);

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

    expect(await applyRetention(nc, nats, dir, 7 * DAY)).toEqual({ removed: [], keptInUse: ['prod_snapshot_20240101-aaaaaaaa'], notAnnounced: [] });
    await held.ackAck();
    expect((await applyRetention(nc, nats, dir, 7 * DAY)).removed).toEqual(['prod_snapshot_20240101-aaaaaaaa']);
    expect(listing()).toEqual(['prod_snapshot_20240102-bbbbbbbb']);
  });

  it('keeps everything a stopped loader has not loaded, however old', async () => {
    snapshot('20240101-aaaaaaaa', 30);
    snapshot('20240102-bbbbbbbb', 20);
    snapshot('20240103-cccccccc', 10);
    for (const id of ['20240101-aaaaaaaa', '20240102-bbbbbbbb', '20240103-cccccccc']) await publishReady(id);
    await addLoader('dev');
    await addLoader('staging'); // its loader is down: it never pulls
    await take('dev', 3);

    const result = await applyRetention(nc, nats, dir, 7 * DAY);
    expect(result).toEqual({ removed: [], keptInUse: ['prod_snapshot_20240102-bbbbbbbb', 'prod_snapshot_20240101-aaaaaaaa'], notAnnounced: [] });
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

    const result = await applyRetention(nc, nats, dir, 7 * DAY);
    expect(result.removed).toEqual(['prod_snapshot_20240102-aaaaaaaa']);
    expect(result.notAnnounced.sort()).toEqual(['prod_snapshot_20240101-0a0a0a0a', 'prod_snapshot_20240101-0b0b0b0b']);
    expect(listing()).toEqual(['prod_snapshot_20240101-0a0a0a0a', 'prod_snapshot_20240101-0b0b0b0b', 'prod_snapshot_20240103-cccccccc']);
    // Nor does the other pipeline's bucket learn about ours.
    const theirs = await new Kvm(nc).create(announcementBucket(other));
    cleanups.push(async () => (await jetstreamManager(nc)).streams.delete(`KV_${announcementBucket(other)}`).catch(() => undefined));
    expect(await theirs.get('20240102-aaaaaaaa')).toBeNull();
  });

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
      await expect(applyRetention(own, ownNats, dir, 7 * DAY)).rejects.toThrow();
      expect(listing()).toEqual(['prod_snapshot_20240101-aaaaaaaa', 'prod_snapshot_20240102-bbbbbbbb']);
    } finally {
      await own.close().catch(() => undefined);
      await server.destroy();
    }
  }, 30_000);
});
