import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { jetstream, jetstreamManager, StorageType, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { Objm, type ObjectInfo, type ObjectStore } from '@nats-io/obj';
import type { NatsConnection } from '@nats-io/transport-node';
import { refusedCreation } from '../messaging/stream-setup';
import { isTransientError } from '../resilience/retry';
import { countBytes } from './byte-counter';
import { readObjectChunks } from './nats-object-reader';
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

/** Waits between looks at an object's metadata that timed out: about 7 s in all, what a new stream leader takes. */
const INFO_RETRY_DELAYS_MS = [500, 1_000, 2_000, 4_000];

/**
 * How long the create of an object's read consumer may take before it is asked again (the client's
 * default is 5 s). After `kill -9` of a cluster node, nats-server 2.9 goes on placing about half of
 * the new one-replica consumers on the dead node until it counts it as gone (a probe still saw it 56 s
 * after the kill): each such create has no answer, and every table a loader opened meanwhile waited
 * 5 s per unlucky create (test/nats-cluster.e2e-spec.ts). A create answers in milliseconds otherwise.
 */
const CONSUMER_CREATE_TIMEOUT_MS = 2_000;

/**
 * An object's metadata, asked again when the request times out or the stream answers that it is
 * temporarily unavailable (isTransientError): right after a cluster node died, while the bucket's
 * stream elects a new leader.
 */
export async function infoWithRetry(lookup: () => Promise<ObjectInfo | null>, delays: number[] = INFO_RETRY_DELAYS_MS): Promise<ObjectInfo | null> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await lookup();
    } catch (error) {
      if (!isTransientError(error) || attempt >= delays.length) throw error;
      await sleep(delays[attempt]);
    }
  }
}

/**
 * Snapshots in a JetStream Object Store bucket: `prod_snapshot_<id>/<file>` objects, the manifest
 * last. The Object Store keeps a SHA-256 per object and checks it while a reader streams it.
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
    const objects = options.create
      ? await objm.create(options.bucket, { replicas: options.replicas, storage: StorageType.File }).catch((error: unknown) => {
          throw refusedCreation(`Object Store bucket ${options.bucket}`, 'SNAPSHOT_REPLICAS', options.replicas, error);
        })
      : await objm.open(options.bucket);
    return new NatsSnapshotStore(objects, await jetstreamManager(connection), jetstream(connection, { timeout: CONSUMER_CREATE_TIMEOUT_MS }), options.bucket);
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
    const info = (name: string) => infoWithRetry(() => this.objects.info(`${prefix}/${name}`));
    const read = async (name: string): Promise<Readable> => {
      const found = await info(name);
      if (!found || found.deleted) throw Object.assign(new Error(`${location}/${name} is not in the object store`), { code: 'ENOENT' });
      // A digest mismatch destroys the stream: it fails the COPY it feeds.
      return readObjectChunks(this.js, this.stream, `$O.${this.bucket}.C.${found.nuid}`, found);
    };
    // Not there (yet): an upload still running, or a replica behind; the caller decides to retry.
    const manifestInfo = await info(MANIFEST_OBJECT);
    if (!manifestInfo || manifestInfo.deleted) throw Object.assign(new Error(`${location} has no manifest in the object store`), { code: 'ENOENT' });
    return {
      manifest: async () => Buffer.concat(await (await read(MANIFEST_OBJECT)).toArray()),
      storedSize: async (name) => {
        assertObjectName(name);
        const found = await info(name);
        return found && !found.deleted ? found.size : undefined;
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

  /**
   * An incomplete snapshot's modifiedAt is its newest object, or the newest chunk of an object still
   * being written anywhere in the bucket, whichever is later: such chunks name no object until the
   * object is finished, so they may belong to it, and a dump in progress in another dumper must look
   * busy to retention.
   */
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
    const incomplete = [...bySnapshot.values()].filter((s) => !s.complete);
    if (incomplete.length) {
      const newestChunk = Math.max(0, ...(await this.unfinishedObjects()).map((chunks) => chunks.lastWrite.getTime()));
      for (const entry of incomplete) if (newestChunk > entry.modifiedAt.getTime()) entry.modifiedAt = new Date(newestChunk);
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
   * The chunk subjects no object points at, with the time of their last chunk: objects being written
   * now (their metadata comes last), or left by an upload killed before it was written.
   */
  private async unfinishedObjects(): Promise<{ subject: string; lastWrite: Date }[]> {
    const live = new Set<string>();
    for (const name of await this.objectNames()) {
      const info = await this.objects.info(name);
      if (info && !info.deleted) live.add(info.nuid);
    }
    const chunkPrefix = `$O.${this.bucket}.C.`;
    const info = await this.jsm.streams.info(this.stream, { subjects_filter: `${chunkPrefix}>` });
    const unfinished: { subject: string; lastWrite: Date }[] = [];
    for (const subject of Object.keys(info.state.subjects ?? {})) {
      if (live.has(subject.slice(chunkPrefix.length))) continue;
      // Gone since the listing (finished and its old chunks purged, or aborted): nothing to do.
      const last = await this.jsm.streams.getMessage(this.stream, { last_by_subj: subject }).catch(() => null);
      if (last) unfinished.push({ subject, lastWrite: last.time });
    }
    return unfinished;
  }

  /**
   * Chunks of objects an interrupted upload never finished (a dumper killed mid-object), once no
   * chunk was added to them since `idleSince`: an upload still running writes a chunk every 128 KiB.
   */
  async purgeInterrupted(idleSince: Date): Promise<string[]> {
    let purged = 0;
    for (const { subject, lastWrite } of await this.unfinishedObjects()) {
      if (lastWrite >= idleSince) continue;
      await this.jsm.streams.purge(this.stream, { filter: subject });
      purged += 1;
    }
    return purged ? [`${purged} unfinished Object Store object(s): chunks purged`] : [];
  }
}
