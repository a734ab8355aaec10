import { mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { loadDumperConfig, type NatsConfig } from '@app/common/config';
import { ensureStream } from '@app/common/messaging';
import { applyRetention } from './retention';

const NATS_URL = process.env.TEST_NATS_URL ?? 'nats://127.0.0.1:4222';
const DAY = 86_400_000;

describe('applyRetention (real NATS)', () => {
  const id = randomBytes(4).toString('hex');
  let nats: NatsConfig;
  let nc: NatsConnection;
  let dir: string;

  beforeAll(async () => {
    nats = loadDumperConfig({ SOURCE_DATABASE_URL: 'postgres://h/db', NATS_URL, NATS_STREAM: `SPEC_RET_${id}`, NATS_SUBJECT_PREFIX: `spec_ret_${id}.` }).nats;
    nc = await connect({ servers: NATS_URL });
    await ensureStream(await jetstreamManager(nc), nats);
    dir = mkdtempSync(join(tmpdir(), 'spec-retention-'));
  });
  afterAll(async () => {
    await (await jetstreamManager(nc)).streams.delete(nats.stream).catch(() => undefined);
    await nc.close();
    rmSync(dir, { recursive: true, force: true });
  });

  function snapshot(snapshotId: string, ageDays: number): void {
    const path = join(dir, `prod_snapshot_${snapshotId}`);
    mkdirSync(path);
    writeFileSync(join(path, 'manifest.json'), JSON.stringify({ snapshotId, createdAt: new Date(Date.now() - ageDays * DAY).toISOString() }));
  }
  const publishReady = (snapshotId: string) => jetstream(nc).publish(`${nats.subjectPrefix}snapshot.ready`, JSON.stringify({ snapshotId }));

  it('removes expired snapshots every environment has finished with, keeps the rest and the newest', async () => {
    snapshot('20240101-aaaaaaaa', 10); // expired, loaded everywhere
    snapshot('20240102-bbbbbbbb', 9); // expired, but qa has not loaded it
    snapshot('20240103-cccccccc', 8); // expired, and the newest: always kept
    snapshot('20231201-dddddddd', 40); // expired, long gone from the stream
    mkdirSync(join(dir, '.tmp-prod_snapshot_20240101-eeeeeeee'));
    utimesSync(join(dir, '.tmp-prod_snapshot_20240101-eeeeeeee'), new Date(Date.now() - 9 * DAY), new Date(Date.now() - 9 * DAY));
    mkdirSync(join(dir, 'not-a-snapshot'));

    for (const snapshotId of ['20240101-aaaaaaaa', '20240102-bbbbbbbb', '20240103-cccccccc']) await publishReady(snapshotId);
    const jsm = await jetstreamManager(nc);
    const filter = `${nats.subjectPrefix}snapshot.ready`;
    for (const env of ['dev', 'qa']) {
      await jsm.consumers.add(nats.stream, { durable_name: `loader-${env}`, filter_subject: filter, ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All });
    }
    // dev has loaded all three; qa only the first.
    const ack = async (env: string, count: number) => {
      const consumer = await jetstream(nc).consumers.get(nats.stream, `loader-${env}`);
      for (let i = 0; i < count; i++) await (await consumer.next())!.ackAck();
    };
    await ack('dev', 3);
    await ack('qa', 1);

    const result = await applyRetention(nc, nats, dir, 7 * DAY);

    expect(result.removed.sort()).toEqual(['.tmp-prod_snapshot_20240101-eeeeeeee', 'prod_snapshot_20231201-dddddddd', 'prod_snapshot_20240101-aaaaaaaa']);
    expect(result.keptInUse).toEqual(['prod_snapshot_20240102-bbbbbbbb']);
    expect(readdirSync(dir).sort()).toEqual(['not-a-snapshot', 'prod_snapshot_20240102-bbbbbbbb', 'prod_snapshot_20240103-cccccccc']);

    await ack('qa', 1);
    expect((await applyRetention(nc, nats, dir, 7 * DAY)).removed).toEqual(['prod_snapshot_20240102-bbbbbbbb']);
    expect(readdirSync(dir).sort()).toEqual(['not-a-snapshot', 'prod_snapshot_20240103-cccccccc']);
  });
});
