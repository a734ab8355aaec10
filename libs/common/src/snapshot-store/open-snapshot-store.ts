import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import type { NatsConnection } from '@nats-io/transport-node';
import type { SnapshotStoreConfig } from '../config/app-config';
import { FsSnapshotStore } from './fs-snapshot-store';
import { NatsSnapshotStore } from './nats-snapshot-store';
import { S3SnapshotStore } from './s3-snapshot-store';
import type { SnapshotStore } from './snapshot-store';

/**
 * SNAPSHOT_DIR checked at boot: an existing directory the dumper may write (its snapshots go there)
 * or a loader may read. Unchecked, the app answered /health and every dump or load failed later.
 */
export async function checkSnapshotDir(dir: string, need: 'write' | 'read'): Promise<void> {
  const problem = await stat(dir).then(
    async (found) => {
      if (!found.isDirectory()) return 'is not a directory';
      return access(dir, need === 'write' ? constants.W_OK | constants.X_OK : constants.R_OK | constants.X_OK).then(
        () => undefined,
        () => `is not a directory this process may ${need === 'write' ? 'write' : 'read'}`,
      );
    },
    (error: NodeJS.ErrnoException) => (error.code === 'ENOENT' ? 'does not exist' : `cannot be looked at (${error.code ?? error.message})`),
  );
  if (problem) throw new Error(`SNAPSHOT_DIR ${dir} ${problem}${need === 'write' ? ': the dumper writes its snapshots there' : ': the loader reads the snapshots there'} (mount the snapshot volume, or set SNAPSHOT_STORE)`);
}

/**
 * The store SNAPSHOT_STORE names. `create`: the dumper makes the Object Store bucket; loaders only
 * open it. `checkBucket` (at boot): an S3 bucket that does not exist rejects, named; what could not
 * be checked (403, S3 out) goes to it as a warning and the store opens.
 */
export async function openSnapshotStore(
  config: SnapshotStoreConfig,
  connection: NatsConnection,
  options: { create: boolean; replicas?: number; checkBucket?: (warning: string) => void },
): Promise<SnapshotStore> {
  switch (config.kind) {
    case 'fs':
      await checkSnapshotDir(config.dir, options.create ? 'write' : 'read');
      return new FsSnapshotStore(config.dir);
    case 'nats':
      return NatsSnapshotStore.open(connection, { bucket: config.bucket, replicas: options.replicas ?? 1, create: options.create });
    case 's3': {
      const store = new S3SnapshotStore({ bucket: config.bucket, ...config.s3 });
      if (options.checkBucket) {
        const warning = await store.checkBucket().catch((error: unknown) => {
          store.destroy();
          throw error;
        });
        if (warning) options.checkBucket(warning);
      }
      return store;
    }
  }
}
