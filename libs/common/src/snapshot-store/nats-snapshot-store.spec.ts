import { randomBytes } from 'node:crypto';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { NATS_URL } from '../../../../test/support/nats';
import { NatsSnapshotStore } from './nats-snapshot-store';

describe('NatsSnapshotStore.open (real NATS, one server)', () => {
  let nc: NatsConnection;

  beforeAll(async () => {
    nc = await connect({ servers: NATS_URL });
  });
  afterAll(async () => {
    await nc.close();
  });

  it('names the bucket and SNAPSHOT_REPLICAS when the broker will not create the bucket with them', async () => {
    const bucket = `spec_replicas_${randomBytes(4).toString('hex')}`;
    try {
      await expect(NatsSnapshotStore.open(nc, { bucket, replicas: 3, create: true })).rejects.toThrow(
        `the broker refused to create Object Store bucket ${bucket} with SNAPSHOT_REPLICAS=3: replicas > 1 not supported in non-clustered mode`,
      );
    } finally {
      await (await jetstreamManager(nc)).streams.delete(`OBJ_${bucket}`).catch(() => undefined);
    }
  });
});
