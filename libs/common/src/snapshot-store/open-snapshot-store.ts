import type { NatsConnection } from '@nats-io/transport-node';
import type { SnapshotStoreConfig } from '../config/app-config';
import { FsSnapshotStore } from './fs-snapshot-store';
import { NatsSnapshotStore } from './nats-snapshot-store';
import { S3SnapshotStore } from './s3-snapshot-store';
import type { SnapshotStore } from './snapshot-store';

/** The store SNAPSHOT_STORE names. `create`: the dumper makes the Object Store bucket; loaders only open it. */
export async function openSnapshotStore(config: SnapshotStoreConfig, connection: NatsConnection, options: { create: boolean; replicas?: number }): Promise<SnapshotStore> {
  switch (config.kind) {
    case 'fs':
      return new FsSnapshotStore(config.dir);
    case 'nats':
      return NatsSnapshotStore.open(connection, { bucket: config.bucket, replicas: options.replicas ?? 1, create: options.create });
    case 's3':
      return new S3SnapshotStore({ bucket: config.bucket, ...config.s3 });
  }
}
