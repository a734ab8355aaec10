import { isCalendarDate } from './dates';
import { InvalidMessageError } from './invalid-message.error';

/** `replication.trigger`: an empty body or `{}` means today in SCHEDULE_TIMEZONE. */
export interface TriggerPayload {
  date?: string;
}

export interface SnapshotTable {
  /** `schema.table`, quoted where needed (e.g. `public."Order Items"`). */
  name: string;
  /** File name inside the snapshot directory. */
  file: string;
  rows: number;
  bytes: number;
  sha256: string;
}

/** `snapshot.ready`: a pointer to a complete snapshot plus digests; the CSV never travels in a message. */
export interface SnapshotReadyPayload {
  snapshotId: string;
  date: string;
  /** Absolute path of the snapshot directory (inside SNAPSHOT_DIR). */
  location: string;
  /** When the dump finished writing (kept for existing consumers). */
  createdAt: string;
  /**
   * The instant the data was taken, read from the source inside the dump's snapshot. Ordering and
   * "never back in time" use it; absent in snapshots announced before it existed (see snapshotInstant).
   */
  takenAt?: string;
  tables: SnapshotTable[];
}

/** The instant a snapshot's data was taken: `takenAt`, or `createdAt` for older announcements. */
export function snapshotInstant(snapshot: { createdAt: string; takenAt?: string }): string {
  return snapshot.takenAt ?? snapshot.createdAt;
}

/** SCHEMA_DRIFT=common-columns: what the environment's schema made the load leave out or default. */
export interface LoadDrift {
  /** Snapshot tables the target lacks (`schema.table`). */
  skippedTables: string[];
  /** Snapshot columns the target lacks (`schema.table."column"`). */
  leftOutColumns: string[];
  /** Target columns the snapshot lacks, given their defaults. */
  defaultedColumns: string[];
  /**
   * Production's sequences (`schema.name`) of a skipped table or a left-out column that no loaded
   * column of the target draws from, left unset. Absent when none (and from older loaders).
   */
  unsetSequences?: string[];
}

/**
 * Which request a load event answers, on every load event: a `db-fanout reload` carries its
 * request's stream sequence (the run history shows it as a new try of the step, not as the first
 * load's), and started/retrying carry the message's delivery (more than 1 after a loader died
 * mid-load: its attempts count on from the earlier delivery's).
 */
export interface LoadRequestFields {
  /** Present on the events of a `db-fanout reload`: the request's stream sequence. */
  reloadSequence?: number;
}

export interface SnapshotLoadedPayload extends LoadRequestFields {
  snapshotId: string;
  environment: string;
  rows: number;
  durationMs: number;
  attempts: number;
  /**
   * When the load committed (ISO 8601): the loader's clock right after COMMIT, or, announced from
   * the ledger by a later delivery, the ledger's `loaded_at`. The run history ends the step there,
   * however late the event got through (the broker out at commit, a loader killed before announcing).
   * Absent in events of loaders from before it existed.
   */
  loadedAt?: string;
  /** Present when SCHEMA_DRIFT=common-columns left something out. */
  drift?: LoadDrift;
}

export interface SnapshotLoadFailedPayload extends LoadRequestFields {
  snapshotId: string;
  environment: string;
  error: string;
  /** PostgreSQL's SQLSTATE, or a short code of ours (e.g. `checksum-mismatch`). */
  code?: string;
  attempts: number;
}

/** `snapshot.load.skipped`: the attempt ended without loading, and says why. */
export interface LoadSkippedPayload extends LoadRequestFields {
  snapshotId: string;
  environment: string;
  reason: 'superseded' | 'already-loaded';
  /** With `superseded`: the newer snapshot the environment holds. */
  by?: string;
}

export interface DumpStartedPayload {
  date: string;
  attempt: number;
  startedAt: string;
  /** The trigger's delivery: 1, more when the dumper died mid-dump and the trigger came again. */
  delivery?: number;
}

export interface LoadStartedPayload extends LoadRequestFields {
  snapshotId: string;
  environment: string;
  attempt: number;
  startedAt: string;
  /** The message's delivery: 1, more when a loader died mid-load and the message came again. */
  delivery?: number;
}

export interface SnapshotFailedPayload {
  date: string;
  error: string;
  /** PostgreSQL's SQLSTATE, or a short code of ours. */
  code?: string;
  attempts: number;
}

/** `YYYYMMDD-<8 hex>`: the snapshot's date, then a random part so re-runs of one date never collide. */
export const SNAPSHOT_ID_PATTERN = /^[0-9]{8}-[0-9a-f]{8}$/;
const SHA256_PATTERN = /^[0-9a-f]{64}$/;

type Json = Record<string, unknown>;

function asObject(value: unknown, what: string): Json {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InvalidMessageError(`${what} must be a JSON object`);
  }
  return value as Json;
}

function rejectUnknownFields(body: Json, allowed: readonly string[], what: string): void {
  const unknown = Object.keys(body).filter((key) => !allowed.includes(key));
  if (unknown.length) throw new InvalidMessageError(`${what} has unknown field(s): ${unknown.join(', ')}`);
}

function stringField(body: Json, field: string, what: string, maxLength = 4096): string {
  const value = body[field];
  if (typeof value !== 'string' || value.length === 0) {
    throw new InvalidMessageError(`${what}.${field} must be a non-empty string`);
  }
  if (value.length > maxLength) throw new InvalidMessageError(`${what}.${field} is longer than ${maxLength} characters`);
  return value;
}

function countField(body: Json, field: string, what: string): number {
  const value = body[field];
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new InvalidMessageError(`${what}.${field} must be a whole number >= 0`);
  }
  return value;
}

function dateField(body: Json, field: string, what: string): string {
  const value = stringField(body, field, what, 10);
  if (!isCalendarDate(value)) throw new InvalidMessageError(`${what}.${field} is not a calendar date YYYY-MM-DD: ${JSON.stringify(value)}`);
  return value;
}

export function parseTriggerPayload(body: unknown): TriggerPayload {
  const what = 'trigger';
  const object = asObject(body, what);
  rejectUnknownFields(object, ['date'], what);
  if (object.date === undefined) return {};
  return { date: dateField(object, 'date', what) };
}

/**
 * Validates the shape of `snapshot.ready`. Path confinement is checked by the loader against its own
 * SNAPSHOT_DIR; here a file name is at least required to be a plain name with no directory part.
 */
export function parseSnapshotReadyPayload(body: unknown): SnapshotReadyPayload {
  const what = 'snapshot.ready';
  const object = asObject(body, what);
  rejectUnknownFields(object, ['snapshotId', 'date', 'location', 'createdAt', 'takenAt', 'tables'], what);
  const snapshotId = stringField(object, 'snapshotId', what, 64);
  if (!SNAPSHOT_ID_PATTERN.test(snapshotId)) {
    throw new InvalidMessageError(`${what}.snapshotId ${JSON.stringify(snapshotId)} is not a snapshot id`);
  }
  const createdAt = stringField(object, 'createdAt', what, 64);
  if (Number.isNaN(Date.parse(createdAt))) throw new InvalidMessageError(`${what}.createdAt is not a timestamp`);
  const takenAt = object.takenAt === undefined ? undefined : stringField(object, 'takenAt', what, 64);
  if (takenAt !== undefined && Number.isNaN(Date.parse(takenAt))) throw new InvalidMessageError(`${what}.takenAt is not a timestamp`);
  if (!Array.isArray(object.tables) || object.tables.length === 0) {
    throw new InvalidMessageError(`${what}.tables must be a non-empty array`);
  }
  const tables = object.tables.map((entry, index) => {
    const at = `${what}.tables[${index}]`;
    const table = asObject(entry, at);
    rejectUnknownFields(table, ['name', 'file', 'rows', 'bytes', 'sha256'], at);
    const file = stringField(table, 'file', at, 255);
    if (file.includes('/') || file.includes('\\') || file === '.' || file === '..' || file.includes('\0')) {
      throw new InvalidMessageError(`${at}.file ${JSON.stringify(file)} must be a plain file name inside the snapshot`);
    }
    const sha256 = stringField(table, 'sha256', at, 64);
    if (!SHA256_PATTERN.test(sha256)) throw new InvalidMessageError(`${at}.sha256 is not a hex SHA-256 digest`);
    return {
      name: stringField(table, 'name', at, 1024),
      file,
      rows: countField(table, 'rows', at),
      bytes: countField(table, 'bytes', at),
      sha256,
    };
  });
  return {
    snapshotId,
    date: dateField(object, 'date', what),
    location: stringField(object, 'location', what),
    createdAt,
    ...(takenAt === undefined ? {} : { takenAt }),
    tables,
  };
}
