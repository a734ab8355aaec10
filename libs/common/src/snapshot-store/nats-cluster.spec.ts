import { Readable } from 'node:stream';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { OwnNatsCluster } from '../../../../test/support/nats-cluster';
import { NatsSnapshotStore } from './nats-snapshot-store';

/** The Object Store on a real 3-node JetStream cluster: replicated, and readable after its leader dies. */
describe('nats snapshot store on a 3-node cluster', () => {
  let cluster: OwnNatsCluster;
  let nc: NatsConnection;
  beforeAll(async () => {
    cluster = await OwnNatsCluster.start();
    nc = await connect({ servers: cluster.url.split(',') });
  }, 60_000);
  afterAll(async () => {
    await nc?.close();
    await cluster?.destroy();
  });

  it('keeps 3 replicas and reads a snapshot back after kill -9 of the bucket stream leader', async () => {
    const store = await NatsSnapshotStore.open(nc, { bucket: 'cluster-spec', replicas: 3, create: true });
    const jsm = await jetstreamManager(nc);
    const info = await jsm.streams.info('OBJ_cluster-spec');
    expect(info.config.num_replicas).toBe(3);

    const body = Buffer.from('id\n' + Array.from({ length: 200_000 }, (_, i) => String(i)).join('\n') + '\n');
    const upload = await store.begin('20240105-1a2b3c4d');
    await upload.put('0001_t.csv', Readable.from([body]));
    await upload.commit(Buffer.from('{}'));

    const leader = (await jsm.streams.info('OBJ_cluster-spec')).cluster?.leader;
    expect(leader).toBeDefined();
    cluster.kill(leader!);
    const started = Date.now();
    // A new leader takes some seconds; the read is retried as a loader's load would be.
    let text = '';
    for (;;) {
      try {
        const source = await store.open(upload.location);
        text = Buffer.concat(await (await source.open('0001_t.csv')).toArray()).toString();
        break;
      } catch (error) {
        if (Date.now() - started > 45_000) throw error;
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    }
    expect(text).toBe(body.toString());
    cluster.restart(leader!);
  }, 90_000);
});
