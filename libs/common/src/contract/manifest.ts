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
  /** CSV bytes (before any compression); `sha256` is the CSV's digest. */
  bytes: number;
  sha256: string;
  /** Bytes as stored, when compressed (SNAPSHOT_COMPRESSION=gzip). */
  storedBytes?: number;
  /** DUMP_RULES: the columns not kept as they are, and their strategies (`email`, `hash`, `jsonb {...}`...). */
  masked?: Record<string, string>;
  /** DUMP_RULES subset: the file holds only the rows the subset kept. */
  subset?: boolean;
}

/** The DUMP_RULES a snapshot was made with: never a value, never the key. */
export interface ManifestRules {
  /** sha256 of the rules file's bytes. */
  digest: string;
  /** Names MASKING_KEY without revealing it (first 8 hex digits of an HMAC of a fixed text). */
  keyId?: string;
  strict: boolean;
}

/**
 * A sequence the dumped rows draw from: owned by a column (serial, identity) or called by a column's
 * default (`nextval('...')`). `table`/`column` name the column it serves (its owner where it has one).
 */
export interface ManifestSequence {
  /**
   * The sequence itself, `schema.name`, quoted where needed (e.g. `public."Order Items_id_seq"`).
   * Written by every dump; absent only in manifests written before it existed.
   */
  sequence?: string;
  table: string;
  schema: string;
  tableName: string;
  column: string;
  lastValue: string;
  isCalled: boolean;
}

/**
 * A sequence no column owns and no column default calls: the application or a trigger calls it
 * (`NEW.number := nextval('invoice_no')`), where PostgreSQL records no dependency. Listed only by a
 * dump of the whole database (no TABLES), as `pg_dump` of the whole database sets every sequence.
 */
export interface ManifestStandaloneSequence {
  /** `schema.name`, quoted where needed. */
  sequence: string;
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
  /** Absent in manifests written before it existed, and when the dump named its TABLES. */
  standaloneSequences?: ManifestStandaloneSequence[];
  /** How every table's object is compressed; absent means none. Loaders read what this says. */
  compression?: 'gzip';
  /** Present when the dump applied DUMP_RULES (masking, subsetting). */
  rules?: ManifestRules;
}

export const MANIFEST_FILE = 'manifest.json';
export const SNAPSHOT_DIR_PREFIX = 'prod_snapshot_';

export function snapshotDirName(snapshotId: string): string {
  return `${SNAPSHOT_DIR_PREFIX}${snapshotId}`;
}

/** The schema each loader keeps its ledger in, in its target: never dumped, never loaded over. */
export const LEDGER_SCHEMA = 'db_fanout';
