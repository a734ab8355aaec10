import type { Readable } from 'node:stream';

export type SnapshotStoreKind = 'fs' | 'nats' | 's3';

/** One snapshot being written. Nothing is visible to a loader as a snapshot until `commit`. */
export interface SnapshotUpload {
  /** Where the snapshot will be found once committed (`snapshot.ready.location`). */
  readonly location: string;
  /** Streams one object (a table's file) into the snapshot; resolves with the bytes stored. */
  put(name: string, body: Readable): Promise<{ storedBytes: number }>;
  /** Writes `manifest.json` last: only then is the snapshot complete. */
  commit(manifest: Buffer): Promise<void>;
  /** Removes whatever this upload wrote (a failed or abandoned dump). Never throws. */
  abort(): Promise<void>;
}

/** One committed snapshot, read back by a loader. */
export interface SnapshotSource {
  manifest(): Promise<Buffer>;
  /** The object's stored bytes, or undefined when it is missing. */
  storedSize(name: string): Promise<number | undefined>;
  /**
   * The object's bytes. A store that keeps its own digest checks it while streaming: a mismatch is an
   * error of the returned stream, so a COPY fed from it fails and rolls back.
   */
  open(name: string): Promise<Readable>;
}

export interface StoredSnapshot {
  snapshotId: string;
  /** Its manifest is written: a loader may take it. Incomplete ones are leftovers of a failed upload. */
  complete: boolean;
  /** When it was last written (for retention of incomplete leftovers). */
  modifiedAt: Date;
  /** How retention's log names an incomplete one it removes, where the store keeps it under another name. */
  storedAs?: string;
}

/** Where snapshots live: a directory, a JetStream Object Store bucket, or an S3 bucket. */
export interface SnapshotStore {
  readonly kind: SnapshotStoreKind;
  /** The location a snapshot of this store is announced with (`snapshot.ready.location`). */
  locationOf(snapshotId: string): string;
  begin(snapshotId: string): Promise<SnapshotUpload>;
  /** Opens the snapshot a `snapshot.ready` points at; a location that is not this store's is refused. */
  open(location: string): Promise<SnapshotSource>;
  list(): Promise<StoredSnapshot[]>;
  remove(snapshotId: string): Promise<void>;
  /**
   * Removes what uploads interrupted before `idleSince` left below the level of objects, where
   * `list()` cannot see it (an object's chunks whose metadata was never written, an unfinished
   * multipart upload), once nothing has been written to it since then: an upload still running in
   * another dumper keeps writing, so it is never touched. One line per kind of thing removed, for
   * the retention log (counts only).
   */
  purgeInterrupted(idleSince: Date): Promise<string[]>;
}

export const SNAPSHOT_PREFIX = 'prod_snapshot_';
export const MANIFEST_OBJECT = 'manifest.json';
const SNAPSHOT_NAME = /^prod_snapshot_([0-9]{8}-[0-9a-f]{8})$/;

/** A location in this store pointed at something else, or at no snapshot: a bad message, never retried. */
export class SnapshotLocationError extends Error {
  override readonly name: string = 'SnapshotLocationError';
}

export function snapshotName(snapshotId: string): string {
  return `${SNAPSHOT_PREFIX}${snapshotId}`;
}

/** The snapshot id in a `prod_snapshot_<id>` name, or undefined. */
export function snapshotIdOf(name: string): string | undefined {
  return SNAPSHOT_NAME.exec(name)?.[1];
}

/**
 * A well-formed snapshot location of another store or bucket: this process's SNAPSHOT_STORE or
 * SNAPSHOT_BUCKET differs from the dumper's. A configuration to fix, reported as a failed load
 * (never dropped as a bad message, which would leave the environment stale without an alert).
 */
export class SnapshotStoreMismatchError extends SnapshotLocationError {
  override readonly name: string = 'SnapshotStoreMismatchError';
  readonly code = 'store-mismatch';
}

const BUCKET_LOCATION = /^(nats|s3):\/\/([^/]+)\/([^/]+)$/;

/** How errors name a store: `the nats store (bucket b)`, `the fs store (SNAPSHOT_DIR)`. */
export function storeLabel(kind: SnapshotStoreKind, bucket?: string): string {
  return kind === 'fs' ? 'the fs store (SNAPSHOT_DIR)' : `the ${kind} store (bucket ${bucket})`;
}

/** The store a well-formed snapshot location belongs to (its label), else undefined. */
function storeOfLocation(location: string): string | undefined {
  const bucket = BUCKET_LOCATION.exec(location);
  if (bucket) return snapshotIdOf(bucket[3]) ? storeLabel(bucket[1] as SnapshotStoreKind, bucket[2]) : undefined;
  return location.startsWith('/') && snapshotIdOf(location.slice(location.lastIndexOf('/') + 1)) ? storeLabel('fs') : undefined;
}

/**
 * The error for a well-formed location of another store than `ours` (a `storeLabel`), or undefined
 * when the location is `ours` or no snapshot location at all (then it is a bad message).
 */
export function storeMismatch(location: string, ours: string): SnapshotStoreMismatchError | undefined {
  const theirs = storeOfLocation(location);
  if (!theirs || theirs === ours) return undefined;
  return new SnapshotStoreMismatchError(`snapshot ${location} is in ${theirs}, and this loader reads ${ours}: set SNAPSHOT_STORE and SNAPSHOT_BUCKET as the dumper's`);
}

/**
 * `<scheme>://<bucket>/prod_snapshot_<id>` for the object stores: the bucket must be this store's and
 * the rest exactly one snapshot name, so a forged location cannot reach other objects.
 */
export function parseBucketLocation(location: string, scheme: 'nats' | 's3', bucket: string): string {
  const prefix = `${scheme}://${bucket}/`;
  if (!location.startsWith(prefix)) {
    throw storeMismatch(location, storeLabel(scheme, bucket)) ?? new SnapshotLocationError(`location ${JSON.stringify(location)} is not in this store (${prefix}...)`);
  }
  const name = location.slice(prefix.length);
  const snapshotId = snapshotIdOf(name);
  if (!snapshotId) throw new SnapshotLocationError(`location ${JSON.stringify(location)} does not name a snapshot (${prefix}${SNAPSHOT_PREFIX}<id>)`);
  return snapshotId;
}

/** A plain object name inside a snapshot: no path separators, no dot names. */
export function assertObjectName(name: string): void {
  if (!name || name.includes('/') || name.includes('\\') || name === '.' || name === '..' || name.includes('\0')) {
    throw new SnapshotLocationError(`${JSON.stringify(name)} is not a plain object name inside a snapshot`);
  }
}
