import type { Readable } from 'node:stream';
import {
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { countBytes } from './byte-counter';
import { assertObjectName, MANIFEST_OBJECT, parseBucketLocation, SNAPSHOT_PREFIX, type SnapshotSource, type SnapshotStore, type SnapshotUpload, snapshotIdOf, snapshotName, type StoredSnapshot } from './snapshot-store';

export interface S3SnapshotStoreOptions {
  bucket: string;
  /** S3_ENDPOINT, S3_REGION, S3_FORCE_PATH_STYLE; credentials come from the SDK's usual chain. */
  endpoint?: string;
  region?: string;
  forcePathStyle?: boolean;
}

/** Multipart parts in flight per object: memory stays at about partSize x queueSize whatever the size. */
const PART_SIZE = 8 * 1024 * 1024;
const QUEUE_SIZE = 2;

function isNotFound(error: unknown): boolean {
  const name = (error as { name?: string }).name;
  const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
  return name === 'NotFound' || name === 'NoSuchKey' || status === 404;
}

/**
 * Snapshots in an S3-compatible bucket: `prod_snapshot_<id>/<file>` keys, streamed up as multipart
 * uploads (a failed upload aborts its parts), the manifest written last.
 */
export class S3SnapshotStore implements SnapshotStore {
  readonly kind = 's3' as const;
  private readonly client: S3Client;

  constructor(private readonly options: S3SnapshotStoreOptions) {
    const config: S3ClientConfig = {
      ...(options.endpoint ? { endpoint: options.endpoint } : {}),
      ...(options.region ? { region: options.region } : {}),
      ...(options.forcePathStyle ? { forcePathStyle: true } : {}),
    };
    this.client = new S3Client(config);
  }

  private get bucket(): string {
    return this.options.bucket;
  }

  locationOf(snapshotId: string): string {
    return `s3://${this.bucket}/${snapshotName(snapshotId)}`;
  }

  begin(snapshotId: string): Promise<SnapshotUpload> {
    const prefix = snapshotName(snapshotId);
    return Promise.resolve({
      location: this.locationOf(snapshotId),
      put: async (name, body) => {
        assertObjectName(name);
        const counted = countBytes(body);
        const upload = new Upload({ client: this.client, params: { Bucket: this.bucket, Key: `${prefix}/${name}`, Body: counted.stream }, partSize: PART_SIZE, queueSize: QUEUE_SIZE });
        await upload.done();
        return { storedBytes: counted.bytes() };
      },
      commit: async (manifest) => {
        await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: `${prefix}/${MANIFEST_OBJECT}`, Body: manifest, ContentType: 'application/json' }));
      },
      abort: () => this.remove(snapshotId).catch(() => undefined),
    });
  }

  async open(location: string): Promise<SnapshotSource> {
    const prefix = snapshotName(parseBucketLocation(location, 's3', this.bucket));
    const read = async (name: string): Promise<Readable> => {
      try {
        const result = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: `${prefix}/${name}` }));
        return result.Body as Readable;
      } catch (error) {
        if (isNotFound(error)) throw Object.assign(new Error(`${location}/${name} is not in the bucket`), { code: 'ENOENT', cause: error });
        throw error;
      }
    };
    const size = async (key: string): Promise<number | undefined> => {
      try {
        return (await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: `${prefix}/${key}` }))).ContentLength;
      } catch (error) {
        if (isNotFound(error)) return undefined;
        throw error;
      }
    };
    // Not there (yet): an upload still running; the caller decides to retry.
    if ((await size(MANIFEST_OBJECT)) === undefined) throw Object.assign(new Error(`${location} has no manifest in the bucket`), { code: 'ENOENT' });
    return {
      manifest: async () => Buffer.concat(await (await read(MANIFEST_OBJECT)).toArray()),
      storedSize: (name) => {
        assertObjectName(name);
        return size(name);
      },
      open: (name) => {
        assertObjectName(name);
        return read(name);
      },
    };
  }

  private async *keys(prefix: string): AsyncGenerator<{ key: string; modifiedAt: Date }> {
    let token: string | undefined;
    do {
      const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token }));
      for (const object of page.Contents ?? []) {
        if (object.Key) yield { key: object.Key, modifiedAt: object.LastModified ?? new Date(0) };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async list(): Promise<StoredSnapshot[]> {
    const bySnapshot = new Map<string, StoredSnapshot>();
    for await (const { key, modifiedAt } of this.keys(SNAPSHOT_PREFIX)) {
      const [dir, object] = key.split('/', 2);
      const snapshotId = snapshotIdOf(dir);
      if (!snapshotId || !object) continue;
      const entry = bySnapshot.get(snapshotId) ?? { snapshotId, complete: false, modifiedAt: new Date(0) };
      if (object === MANIFEST_OBJECT) entry.complete = true;
      if (modifiedAt > entry.modifiedAt) entry.modifiedAt = modifiedAt;
      bySnapshot.set(snapshotId, entry);
    }
    return [...bySnapshot.values()];
  }

  async remove(snapshotId: string): Promise<void> {
    const prefix = `${snapshotName(snapshotId)}/`;
    const keys: string[] = [];
    for await (const { key } of this.keys(prefix)) keys.push(key);
    // The manifest first: from then on no loader takes what is left for a snapshot.
    const manifest = `${prefix}${MANIFEST_OBJECT}`;
    if (keys.includes(manifest)) await this.client.send(new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: [{ Key: manifest }] } }));
    const rest = keys.filter((key) => key !== manifest);
    for (let i = 0; i < rest.length; i += 1000) {
      await this.client.send(new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: rest.slice(i, i + 1000).map((Key) => ({ Key })) } }));
    }
  }

  destroy(): void {
    this.client.destroy();
  }
}
