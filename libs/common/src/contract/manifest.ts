import type { ServerIdentity } from '../database/server-identity';

/**
 * `manifest.json`, written last into every snapshot directory. The loader trusts only what the
 * manifest and the checksums agree on; the message is a pointer to it.
 */
export interface ManifestTable {
  /** `schema.table`, as in snapshot.ready. */
  name: string;
  schema: string;
  table: string;
  file: string;
  /** Column names in file order (generated columns are left out: the target computes them). */
  columns: string[];
  rows: number;
  bytes: number;
  sha256: string;
}

/**
 * A sequence of production with its state: one that a dumped column's default calls (`nextval(...)`)
 * or that a dumped column owns (serial, identity). The loader sets the target's sequence of the same
 * name (`sequence`); manifests written before that field existed list only owned sequences, found
 * in the target through the owning column.
 */
export interface ManifestSequence {
  /** The column that uses or owns the sequence: `schema.table` as in snapshot.ready, and its parts. */
  table: string;
  schema: string;
  tableName: string;
  column: string;
  /** The sequence's own name, `schema.sequence` (quoted where needed, as table names are). */
  sequence?: string;
  lastValue: string;
  isCalled: boolean;
}

export interface SnapshotManifest {
  formatVersion: 1;
  snapshotId: string;
  /** Where the snapshot was read from: a loader refuses to load it back into that same database. */
  source?: ServerIdentity;
  date: string;
  createdAt: string;
  /** The instant the data was taken, read from the source inside the dump's snapshot (see snapshotInstant). */
  takenAt?: string;
  tables: ManifestTable[];
  sequences: ManifestSequence[];
}

export const MANIFEST_FILE = 'manifest.json';
export const SNAPSHOT_DIR_PREFIX = 'prod_snapshot_';

export function snapshotDirName(snapshotId: string): string {
  return `${SNAPSHOT_DIR_PREFIX}${snapshotId}`;
}
