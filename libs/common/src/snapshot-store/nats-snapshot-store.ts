import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { jetstream, jetstreamManager, StorageType, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { Objm, type ObjectInfo, type ObjectStore } from '@nats-io/obj';
import type { NatsConnection } from '@nats-io/transport-node';
import { countBytes } from './byte-counter';
import { assertObjectName, MANIFEST_OBJECT, parseBucketLocation, type SnapshotSource, type SnapshotStore, type SnapshotUpload, snapshotIdOf, snapshotName, type StoredSnapshot } from './snapshot-store';

export interface NatsSnapshotStoreOptions {
  bucket: string;
  /** Object Store replicas (3 on a 3-node cluster); applies when the bucket is created. */
  replicas: number;
  /** The dumper creates the bucket; a loader only opens it (and retries until a dumper has made it). */
  create: boolean;
}

/** Object names are base64url (padded) in the bucket's subjects: `$O.<bucket>.M.<name>`. */
function decodeName(encoded: string): string {
  return Buffer.from(encoded.replace(/-/g, '+').replace(/_/g, '/'), 'base64').toString('utf8');
}

/** Chunks pulled ahead of the reader: a download holds about this many x 128 KiB, whatever the object's size. */
const READ_AHEAD_CHUNKS = 8;

/** The bytes of an Object Store digest (`SHA-256=<base64url>`), or undefined for another algorithm. */
function sha256Of(digest: string): Buffer | undefined {
  const match = /^SHA-256=(.+)$/i.exec(digest);
  return match ? Buffer.from(match[1].replace(/-/g, '+').replace(/_/g, '/'), 'base64') : undefined;
}

/**
 * An object's chunks, pulled a few at a time as the reader takes them, its SHA-256 checked at the
 * end. Not the client's get(): that pushes every chunk into its stream without waiting for the
 * reader, so a download faster than the COPY it feeds piled the whole object up in memory.
 */
async function* objectChunks(js: JetStreamClient, stream: string, bucket: string, info: ObjectInfo): AsyncGenerator<Uint8Array> {
  if (info.size === 0) return;
  const consumer = await js.consumers.get(stream, { filter_subjects: `$O.${bucket}.C.${info.nuid}` });
  const messages = await consumer.consume({ max_messages: READ_AHEAD_CHUNKS });
  const hash = createHash('sha256');
  let bytes = 0;
  try {
    for await (const message of messages) {
      hash.update(message.data);
      bytes += message.data.length;
      if (message.data.length > 0) yield message.data;
      if (message.info.pending === 0) break;
    }
  } finally {
    await messages.close();
  }
  const expected = sha256Of(info.digest);
  if (bytes !== info.size || !expected || !expected.equals(hash.digest())) {
    throw new Error(`received a corrupt object ${info.name}, digests do not match (${bytes} of ${info.size} bytes; expected ${info.digest})`);
  }
}

/**
 * Snapshots in a JetStream Object Store bucket: `prod_snapshot_<id>/<file>` objects, the manifest
 * last. The Object Store keeps a SHA-256 per object; a reader checks it while it streams the object.
 * Compression options of the client need nats-server 2.10, so callers compress in the stream.
 */
export class NatsSnapshotStore implements SnapshotStore {
  readonly kind = 'nats' as const;

  private constructor(
    private readonly objects: ObjectStore,
    private readonly jsm: JetStreamManager,
    private readonly js: JetStreamClient,
    private readonly bucket: string,
  ) {}

  static async open(connection: NatsConnection, options: NatsSnapshotStoreOptions): Promise<NatsSnapshotStore> {
    // create() opens the bucket when it exists (its replicas then stay as they are).
    const objm = new Objm(connection);
    const objects = options.create ? await objm.create(options.bucket, { replicas: options.replicas, storage: StorageType.File }) : await objm.open(options.bucket);
    return new NatsSnapshotStore(objects, await jetstreamManager(connection), jetstream(connection), options.bucket);
  }

  private get stream(): string {
    return `OBJ_${this.bucket}`;
  }

  locationOf(snapshotId: string): string {
    return `nats://${this.bucket}/${snapshotName(snapshotId)}`;
  }

  begin(snapshotId: string): Promise<SnapshotUpload> {
    const prefix = snapshotName(snapshotId);
    const location = this.locationOf(snapshotId);
    const objects = this.objects;
    return Promise.resolve({
      location,
      put: async (name, body) => {
        assertObjectName(name);
        const counted = countBytes(body);
        await objects.put({ name: `${prefix}/${name}` }, Readable.toWeb(counted.stream) as ReadableStream<Uint8Array>);
        return { storedBytes: counted.bytes() };
      },
      commit: async (manifest) => {
        await objects.put({ name: `${prefix}/${MANIFEST_OBJECT}` }, Readable.toWeb(Readable.from([manifest])) as ReadableStream<Uint8Array>);
      },
      abort: () => this.remove(snapshotId).catch(() => undefined),
    });
  }

  async open(location: string): Promise<SnapshotSource> {
    const prefix = snapshotName(parseBucketLocation(location, 'nats', this.bucket));
    const objects = this.objects;
    const read = async (name: string): Promise<Readable> => {
      const info = await objects.info(`${prefix}/${name}`);
      if (!info || info.deleted) throw Object.assign(new Error(`${location}/${name} is not in the object store`), { code: 'ENOENT' });
      // A digest mismatch is an error of the Node stream at its end, which fails the COPY it feeds.
      return Readable.from(objectChunks(this.js, this.stream, this.bucket, info), { objectMode: false });
    };
    // Not there (yet): an upload still running, or a replica behind; the caller decides to retry.
    const manifestInfo = await objects.info(`${prefix}/${MANIFEST_OBJECT}`);
    if (!manifestInfo || manifestInfo.deleted) throw Object.assign(new Error(`${location} has no manifest in the object store`), { code: 'ENOENT' });
    return {
      manifest: async () => Buffer.concat(await (await read(MANIFEST_OBJECT)).toArray()),
      storedSize: async (name) => {
        assertObjectName(name);
        const info = await objects.info(`${prefix}/${name}`);
        return info && !info.deleted ? info.size : undefined;
      },
      open: (name) => {
        assertObjectName(name);
        return read(name);
      },
    };
  }

  /** Object names from the bucket's meta subjects (list()/watch() misbehave on nats-server 2.9). */
  private async objectNames(): Promise<string[]> {
    const prefix = `$O.${this.bucket}.M.`;
    const info = await this.jsm.streams.info(this.stream, { subjects_filter: `${prefix}>` });
    return Object.keys(info.state.subjects ?? {}).map((subject) => decodeName(subject.slice(prefix.length)));
  }

  async list(): Promise<StoredSnapshot[]> {
    const bySnapshot = new Map<string, StoredSnapshot>();
    for (const name of await this.objectNames()) {
      const [dir, object] = name.split('/', 2);
      const snapshotId = snapshotIdOf(dir);
      if (!snapshotId || !object) continue;
      const info = await this.objects.info(name);
      if (!info || info.deleted) continue;
      const entry = bySnapshot.get(snapshotId) ?? { snapshotId, complete: false, modifiedAt: new Date(0) };
      if (object === MANIFEST_OBJECT) entry.complete = true;
      const mtime = new Date(info.mtime);
      if (mtime > entry.modifiedAt) entry.modifiedAt = mtime;
      bySnapshot.set(snapshotId, entry);
    }
    return [...bySnapshot.values()];
  }

  async remove(snapshotId: string): Promise<void> {
    const prefix = `${snapshotName(snapshotId)}/`;
    // The manifest first: from then on no loader takes what is left for a snapshot.
    const names = (await this.objectNames()).filter((name) => name.startsWith(prefix));
    names.sort((a, b) => Number(b.endsWith(`/${MANIFEST_OBJECT}`)) - Number(a.endsWith(`/${MANIFEST_OBJECT}`)));
    for (const name of names) {
      await this.objects.delete(name);
      // Drop the deletion marker too, so removed snapshots do not pile up in the bucket's subjects.
      const encoded = Buffer.from(name).toString('base64').replace(/\+/g, '-').replace(/\//g, '_');
      await this.jsm.streams.purge(this.stream, { filter: `$O.${this.bucket}.M.${encoded}` });
    }
  }

  /**
   * Chunks no object points at: left by an upload killed before its object's metadata was written.
   * Purged so that interrupted uploads do not fill the bucket. Returns how many chunk subjects went.
   */
  async purgeOrphanChunks(): Promise<number> {
    const live = new Set<string>();
    for (const name of await this.objectNames()) {
      const info = await this.objects.info(name);
      if (info && !info.deleted) live.add(info.nuid);
    }
    const chunkPrefix = `$O.${this.bucket}.C.`;
    const info = await this.jsm.streams.info(this.stream, { subjects_filter: `${chunkPrefix}>` });
    let purged = 0;
    for (const subject of Object.keys(info.state.subjects ?? {})) {
      if (live.has(subject.slice(chunkPrefix.length))) continue;
      await this.jsm.streams.purge(this.stream, { filter: subject });
      purged += 1;
    }
    return purged;
  }
}
