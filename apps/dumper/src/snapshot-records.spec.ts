import { jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { NATS_URL, specNatsConfig } from '../../../test/support/nats';
import { announcementBucket, openSnapshotRecords } from './snapshot-records';

describe('openSnapshotRecords (real NATS, one server)', () => {
  let nc: NatsConnection;

  beforeAll(async () => {
    nc = await connect({ servers: NATS_URL });
  });
  afterAll(async () => {
    await nc.close();
  });

  it('names the bucket and NATS_STREAM_REPLICAS when the broker will not create the bucket, instead of opening one that is not there', async () => {
    const nats = { ...specNatsConfig('records'), streamReplicas: 3 };
    try {
      await expect(openSnapshotRecords(nc, nats)).rejects.toThrow(
        `the broker refused to create KV bucket ${announcementBucket(nats)} with NATS_STREAM_REPLICAS=3: replicas > 1 not supported in non-clustered mode`,
      );
    } finally {
      await (await jetstreamManager(nc)).streams.delete(`KV_${announcementBucket(nats)}`).catch(() => undefined);
    }
  });

  it('uses a bucket that exists as it was made (here one replica), whatever NATS_STREAM_REPLICAS says', async () => {
    const nats = { ...specNatsConfig('records'), streamReplicas: 3 };
    try {
      await new Kvm(nc).create(announcementBucket(nats), { history: 1, replicas: 1 });
      const kv = await openSnapshotRecords(nc, nats);
      await kv.put('20240105-1a2b3c4d', '{}');
      expect((await kv.get('20240105-1a2b3c4d'))?.string()).toBe('{}');
    } finally {
      await (await jetstreamManager(nc)).streams.delete(`KV_${announcementBucket(nats)}`).catch(() => undefined);
    }
  });
});
