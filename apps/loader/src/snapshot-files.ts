import { createReadStream } from 'node:fs';
import { realpath, stat } from 'node:fs/promises';
import { PassThrough, type Readable, Transform } from 'node:stream';
import { basename, dirname, join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { setTimeout as sleep } from 'node:timers/promises';
import { InvalidMessageError, MANIFEST_FILE, type ManifestTable, type SnapshotManifest, type SnapshotReadyPayload, SNAPSHOT_DIR_PREFIX } from '@app/common/contract';
import { isTransientError } from '@app/common/resilience';
import { decompressor, directorySource, isInside, SnapshotFileError, type SnapshotSource, storeLabel, storeMismatch } from '@app/common/snapshot-store';
import { formatQualifiedName, parseQualifiedName } from '@app/common/database';

const READ_BUFFER = 1 << 20;

// The `fs` store's confined reader of a snapshot directory, and the error of a bad snapshot: in the store, used here.
export { directorySource, SnapshotFileError } from '@app/common/snapshot-store';

/** A download that delivers nothing for this long is cut and retried (a stalled stream after a broker failover). */
export const STALL_TIMEOUT_MS = 60_000;

/**
 * One table's CSV as the COPY reads it: decompressed when the manifest says so, and (from an object
 * store) cut with ETIMEDOUT, a transient error, when it stalls.
 */
export async function openTableData(source: SnapshotSource, manifest: SnapshotManifest, table: ManifestTable, stallMs?: number): Promise<Readable> {
  let stream = await (stallMs ? openWithin(source, table.file, stallMs) : source.open(table.file));
  if (stallMs) stream = watchForStalls(stream, stallMs, table.file);
  const gunzip = decompressor(manifest.compression ?? 'none');
  if (!gunzip) return stream;
  // zlib's own words ("incorrect data check") do not say which file: a damaged object is a bad snapshot.
  const csv = new PassThrough({ highWaterMark: READ_BUFFER });
  stream.on('error', (error) => csv.destroy(error));
  gunzip.on('error', (error) => csv.destroy(new SnapshotFileError(`${table.file} (${table.name}) is not a valid gzip stream: ${error.message}`)));
  return closesUpstream(stream.pipe(gunzip).pipe(csv), gunzip, stream);
}

/**
 * `pipe()` carries data and (here, by hand) errors downstream, never a close upstream: a reader that
 * stops early (the header check reads one line; a failed COPY) destroys only the last stream, and
 * the download under it stayed open, paused, for good: an S3 response holding one of the SDK's 50
 * sockets (the next loads waited for a free one for ever), an open file, an Object Store consumer.
 */
function closesUpstream(last: Readable, ...upstream: Readable[]): Readable {
  last.once('close', () => {
    for (const stream of upstream) if (!stream.destroyed) stream.destroy();
  });
  return last;
}

/**
 * Opening a download is waiting for the store too (an S3 GetObject whose response never begins):
 * it fails after `ms` like a stalled one, and a download that opens after all is closed at once.
 */
async function openWithin(source: SnapshotSource, file: string, ms: number): Promise<Readable> {
  const opening = source.open(file);
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error(`opening ${file} in the snapshot store took over ${ms / 1000} s`), { code: 'ETIMEDOUT' })), ms);
  });
  try {
    return await Promise.race([opening, timedOut]);
  } catch (error) {
    void opening.then((late) => late.destroy(), () => undefined);
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Fails a download that delivers nothing for `ms` while its reader waits for data. Time the reader
 * holds back is not the store's: COPY applying backpressure (a trigger waiting on a lock, an index
 * being maintained) leaves data buffered here, and the wait starts again. With nothing buffered
 * the reader is waiting, whether it reads by pipe or by iterating (which leaves the stream paused).
 */
function watchForStalls(source: Readable, ms: number, file: string): Readable {
  const stall = () => {
    if (watched.readableLength > 0) {
      timer.refresh();
      return;
    }
    watched.destroy(Object.assign(new Error(`reading ${file} from the snapshot store stalled for ${ms / 1000} s`), { code: 'ETIMEDOUT' }));
  };
  let timer = setTimeout(stall, ms);
  const watched = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      timer.refresh();
      callback(null, chunk);
    },
    flush(callback) {
      clearTimeout(timer);
      callback();
    },
    destroy(error, callback) {
      clearTimeout(timer);
      callback(error);
    },
  });
  timer = timer.unref();
  source.on('error', (error) => watched.destroy(error));
  return closesUpstream(source.pipe(watched), source);
}

/**
 * The snapshot directory a message points at, under this loader's own SNAPSHOT_DIR. The dumper
 * publishes its own absolute path, and a loader may mount the volume elsewhere: only the directory's
 * name (`prod_snapshot_<id>`) is taken from the location and looked up under SNAPSHOT_DIR. A location
 * that names no snapshot directory, or walks with `..`, is a bad message; every symlink is resolved
 * before the check, so a link cannot lead the loader outside SNAPSHOT_DIR either.
 */
export async function resolveSnapshotDir(snapshotDir: string, location: string): Promise<string> {
  const mismatch = storeMismatch(location, storeLabel('fs'));
  if (mismatch) throw mismatch;
  const root = await realpath(snapshotDir);
  const name = basename(location);
  if (!name.startsWith(SNAPSHOT_DIR_PREFIX) || location.split(/[\\/]/).includes('..')) {
    throw new InvalidMessageError(`location ${JSON.stringify(location)} is not a snapshot directory inside SNAPSHOT_DIR (${snapshotDir})`);
  }
  const lexical = join(root, name);
  // A missing directory is waited for and then reported by the load (a failed load, not a bad message).
  const real = await realpath(lexical).catch(() => lexical);
  if (!isInside(root, real)) {
    throw new InvalidMessageError(`location ${JSON.stringify(location)} leads outside SNAPSHOT_DIR (${snapshotDir}) through a symbolic link`);
  }
  return real;
}

/** Errors a network filesystem gives for a directory it does not show yet (or for a moment). */
const NOT_VISIBLE_YET = new Set(['ENOENT', 'ESTALE', 'EIO']);

/** How long a snapshot may take to become visible after its message arrived: 5 looks, 2 s apart. */
export const SNAPSHOT_VISIBILITY = { attempts: 5, delayMs: 2_000 };

/**
 * Waits, within a bound, until the snapshot's manifest is visible: on NFS and similar volumes a
 * directory renamed into place on the dumper's host can appear on the loader's a little later.
 * Then fails with code `snapshot-not-found` (a failed load, reported and alerted like any other).
 */
export async function waitForSnapshot(dir: string, signal?: AbortSignal, bound = SNAPSHOT_VISIBILITY): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await stat(join(dir, MANIFEST_FILE));
      return;
    } catch (error) {
      const code = (error as { code?: string }).code ?? '';
      if (!NOT_VISIBLE_YET.has(code)) return; // anything else is reported by the load itself, naming the file
      if (attempt >= bound.attempts || signal?.aborted) {
        throw new SnapshotNotFoundError(
          `snapshot directory ${basename(dir)} not found in SNAPSHOT_DIR (${dirname(dir)}) after ${bound.attempts} looks over ${(((bound.attempts - 1) * bound.delayMs) / 1000).toFixed(0)} s (${code}); is the snapshot volume mounted there?`,
        );
      }
      await sleep(bound.delayMs, undefined, { signal }).catch(() => undefined);
    }
  }
}

/** The snapshot's directory never became visible under SNAPSHOT_DIR. */
export class SnapshotNotFoundError extends SnapshotFileError {
  readonly code = 'snapshot-not-found';
  constructor(message: string) {
    super(message);
    this.name = 'SnapshotNotFoundError';
  }
}

/** A sequence's value in a manifest: a bigint, as text. */
const SEQUENCE_VALUE = /^-?[0-9]{1,19}$/;

/** Reads manifest.json and checks that it describes exactly the snapshot the message announced. */
export async function readManifest(dir: string | (SnapshotSource & { label: string }), announced: SnapshotReadyPayload): Promise<SnapshotManifest> {
  const source = typeof dir === 'string' ? directorySource(dir) : dir;
  const path = typeof dir === 'string' ? join(dir, MANIFEST_FILE) : `${source.label}/${MANIFEST_FILE}`;
  let text: string;
  try {
    text = (await source.manifest()).toString('utf8');
  } catch (error) {
    // A store that is failing over (a timeout, a JetStream stream without a leader yet) is not a bad
    // snapshot: passed on as it is, the load is retried. Wrapped, it failed the load for good (seen in
    // the cluster e2e: "cannot read .../manifest.json: JetStream system temporarily unavailable").
    if (error instanceof SnapshotFileError || isTransientError(error)) throw error;
    const missing = (error as { code?: string }).code === 'ENOENT';
    throw new SnapshotFileError(
      missing ? `${path} does not exist (is SNAPSHOT_DIR shared with the dumper?)` : `cannot read ${path}: ${(error as Error).message}`,
    );
  }
  let manifest: SnapshotManifest;
  try {
    manifest = JSON.parse(text) as SnapshotManifest;
  } catch {
    throw new SnapshotFileError(`${path} is not valid JSON`);
  }
  if (manifest.formatVersion !== 1 || manifest.snapshotId !== announced.snapshotId || !Array.isArray(manifest.tables)) {
    throw new SnapshotFileError(`${path} does not describe snapshot ${announced.snapshotId}`);
  }
  if (manifest.tables.length !== announced.tables.length) {
    throw new SnapshotFileError(`${path} lists ${manifest.tables.length} tables, the message ${announced.tables.length}`);
  }
  announced.tables.forEach((table, index) => {
    const entry = manifest.tables[index];
    const same =
      entry &&
      entry.name === table.name &&
      entry.file === table.file &&
      entry.sha256 === table.sha256 &&
      entry.bytes === table.bytes &&
      entry.rows === table.rows &&
      typeof entry.schema === 'string' &&
      typeof entry.table === 'string' &&
      // The load goes into schema.table: it must be the table the message names.
      formatQualifiedName({ schema: entry.schema, name: entry.table }) === table.name &&
      Array.isArray(entry.columns) &&
      entry.columns.every((c) => typeof c === 'string' && c.length > 0);
    if (!same) throw new SnapshotFileError(`${path} does not match the message for table ${table.name}`);
  });
  // Absent: nothing to set. Present but not a list (`{}`, `"..."`): a damaged manifest, where reading it
  // as empty silently left every sequence of the environment behind production's.
  if (manifest.sequences === undefined) manifest.sequences = [];
  if (!Array.isArray(manifest.sequences)) throw new SnapshotFileError(`${path} is not a manifest this loader can use: sequences must be a list`);
  manifest.sequences.forEach((entry: unknown, index) => {
    const problem = sequenceEntryProblem(entry);
    if (problem) throw new SnapshotFileError(`${path} is not a manifest this loader can use: sequences[${index}]${problem}`);
  });
  if (manifest.standaloneSequences !== undefined) {
    const entries: unknown = manifest.standaloneSequences;
    const wellFormed = (entry: unknown) => {
      const { sequence, lastValue, isCalled } = (entry ?? {}) as Record<string, unknown>;
      return typeof sequence === 'string' && parsesAsQualifiedName(sequence) && typeof lastValue === 'string' && SEQUENCE_VALUE.test(lastValue) && typeof isCalled === 'boolean';
    };
    if (!Array.isArray(entries) || !entries.every(wellFormed)) {
      throw new SnapshotFileError(`${path} has a standaloneSequences entry that is not {sequence: "schema.name", lastValue: "<integer>", isCalled: true|false}`);
    }
  }
  if (manifest.compression !== undefined && manifest.compression !== 'gzip') {
    throw new SnapshotFileError(`${path} names a compression this loader does not know: ${JSON.stringify(manifest.compression)}`);
  }
  return manifest;
}

/**
 * What is wrong with one entry of the manifest's `sequences` (as the dumper writes them: see
 * TableCatalog.readSequences), or undefined: checked field by field before the load touches the
 * target, as a hand-edited or truncated entry otherwise failed mid-load with a TypeError naming
 * nothing. `sequence` is absent in manifests written before it existed.
 */
function sequenceEntryProblem(entry: unknown): string | undefined {
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) return ' must be an object';
  const fields = entry as Record<string, unknown>;
  if (fields.sequence !== undefined && (typeof fields.sequence !== 'string' || !parsesAsQualifiedName(fields.sequence))) {
    return '.sequence must be a qualified name ("schema.name") when present';
  }
  if (typeof fields.table !== 'string' || !parsesAsQualifiedName(fields.table)) return '.table must be a qualified name ("schema.table")';
  for (const field of ['schema', 'tableName', 'column']) {
    if (typeof fields[field] !== 'string' || fields[field] === '') return `.${field} must be a non-empty string`;
  }
  if (typeof fields.lastValue !== 'string' || !SEQUENCE_VALUE.test(fields.lastValue)) return '.lastValue must be an integer in a string ("42")';
  if (typeof fields.isCalled !== 'boolean') return '.isCalled must be true or false';
  return undefined;
}

function parsesAsQualifiedName(text: string): boolean {
  try {
    parseQualifiedName(text);
    return true;
  } catch {
    return false;
  }
}

/** Cheap checks before the database is touched: every file exists and has the size the manifest gives (as stored). */
export async function checkFileSizes(dir: string | SnapshotSource, manifest: SnapshotManifest): Promise<void> {
  const source = typeof dir === 'string' ? directorySource(dir) : dir;
  for (const table of manifest.tables) {
    const size = await source.storedSize(table.file);
    if (size === undefined) throw new SnapshotFileError(`snapshot file ${table.file} for ${table.name} is missing`);
    const expected = manifest.compression ? table.storedBytes : table.bytes;
    if (size !== expected) {
      throw new SnapshotFileError(`snapshot file ${table.file} for ${table.name} is ${size} bytes, the manifest says ${expected}`);
    }
  }
}

/**
 * Parses the CSV header line (column names, quoted the way PostgreSQL quotes them) so the COPY
 * can name its columns from the file itself.
 */
export async function readCsvHeader(path: string | Readable, label = typeof path === 'string' ? path : 'snapshot file'): Promise<string[]> {
  const stream = typeof path === 'string' ? createReadStream(path, { start: 0, end: 1 << 20 }) : path;
  let text = '';
  const decoder = new StringDecoder('utf8');
  for await (const chunk of stream) {
    text += decoder.write(chunk as Buffer);
    if (text.length > 1 << 20) break;
    const parsed = parseCsvRecord(text);
    if (parsed) {
      stream.destroy();
      // An empty first line: a table without columns (PostgreSQL names no column '').
      return parsed.length === 1 && parsed[0] === '' ? [] : parsed;
    }
  }
  const parsed = parseCsvRecord(`${text}\n`);
  stream.destroy();
  if (!parsed || (parsed.length === 1 && parsed[0] === '')) throw new SnapshotFileError(`${label} has no CSV header line`);
  return parsed;
}

/** The first CSV record of `text`, or undefined when it does not end within `text` yet. */
export function parseCsvRecord(text: string): string[] | undefined {
  const fields: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (quoted) {
      if (ch === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i++;
        } else {
          quoted = false;
        }
      } else {
        field += ch;
      }
    } else if (ch === '"') {
      quoted = true;
    } else if (ch === ',') {
      fields.push(field);
      field = '';
    } else if (ch === '\n' || ch === '\r') {
      fields.push(field);
      return fields;
    } else {
      field += ch;
    }
  }
  return undefined;
}
