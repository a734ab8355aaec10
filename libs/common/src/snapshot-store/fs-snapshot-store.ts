import { createWriteStream } from 'node:fs';
import { mkdir, open, readdir, realpath, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, join, resolve, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { countBytes } from './byte-counter';
import { directorySource } from './snapshot-directory';
import { assertObjectName, MANIFEST_OBJECT, SNAPSHOT_PREFIX, SnapshotLocationError, type SnapshotSource, type SnapshotStore, type SnapshotUpload, snapshotIdOf, snapshotName, type StoredSnapshot } from './snapshot-store';

const TMP_PREFIX = '.tmp-';
/** Write and read size: small enough to die young in the apps' small young generation (see the dumper's WRITE_BUFFER). */
const IO_BUFFER = 128 * 1024;

async function fsyncPath(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * When a snapshot directory's manifest was written; `missing` only when it does not exist. A
 * directory this process may not read (another pipeline's, sharing SNAPSHOT_DIR under another user)
 * is `unreadable`: never judged, never touched. Any other error (EIO, ESTALE on NFS) throws, so
 * retention removes nothing on a guess: a complete snapshot taken for a leftover would be deleted
 * without looking at who still needs it.
 */
async function manifestState(path: string): Promise<Date | 'missing' | 'unreadable'> {
  try {
    return (await stat(path)).mtime;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return 'missing';
    if (code === 'EACCES' || code === 'EPERM') return 'unreadable';
    throw error;
  }
}

/**
 * Snapshots as directories under SNAPSHOT_DIR: written as `.tmp-prod_snapshot_<id>/`, fsynced, then
 * renamed into place, so a directory named `prod_snapshot_<id>` is always complete.
 */
export class FsSnapshotStore implements SnapshotStore {
  readonly kind = 'fs' as const;
  private readonly root: string;

  constructor(snapshotDir: string) {
    this.root = resolve(snapshotDir);
  }

  locationOf(snapshotId: string): string {
    return join(this.root, snapshotName(snapshotId));
  }

  async begin(snapshotId: string): Promise<SnapshotUpload> {
    const name = snapshotName(snapshotId);
    const tmp = join(this.root, `${TMP_PREFIX}${name}`);
    const location = this.locationOf(snapshotId);
    await mkdir(tmp, { recursive: false });
    return {
      location,
      put: async (object, body) => {
        assertObjectName(object);
        const counted = countBytes(body);
        const path = join(tmp, object);
        await pipeline(counted.stream, createWriteStream(path, { highWaterMark: IO_BUFFER }));
        await fsyncPath(path);
        return { storedBytes: counted.bytes() };
      },
      commit: async (manifest) => {
        const path = join(tmp, MANIFEST_OBJECT);
        await writeFile(path, manifest);
        await fsyncPath(path);
        await fsyncPath(tmp);
        await rename(tmp, location);
        await fsyncPath(this.root);
      },
      abort: () => rm(tmp, { recursive: true, force: true }).catch(() => undefined),
    };
  }

  /**
   * The snapshot a location names, looked up by its directory name under this loader's own
   * SNAPSHOT_DIR (the volume may be mounted at another path than the dumper's), and still confined
   * to it once symbolic links are resolved.
   */
  async open(location: string): Promise<SnapshotSource> {
    const name = basename(location);
    if (!snapshotIdOf(name)) throw new SnapshotLocationError(`location ${JSON.stringify(location)} does not name a snapshot directory (${SNAPSHOT_PREFIX}<id>)`);
    const dir = await realpath(join(this.root, name));
    const root = await realpath(this.root);
    if (!dir.startsWith(root + sep)) throw new SnapshotLocationError(`snapshot ${name} resolves to ${dir}, outside SNAPSHOT_DIR ${root}`);
    // Read as the loader reads it: only regular files inside the directory, never through a link out of it.
    const files = directorySource(dir);
    return {
      manifest: () => files.manifest(),
      storedSize: (object) => {
        assertObjectName(object);
        return files.storedSize(object);
      },
      open: (object): Promise<Readable> => {
        assertObjectName(object);
        return files.open(object);
      },
    };
  }

  async list(): Promise<StoredSnapshot[]> {
    const snapshots: StoredSnapshot[] = [];
    for (const entry of await readdir(this.root, { withFileTypes: true })) {
      if (!entry.isDirectory()) continue;
      const named = !entry.name.startsWith(TMP_PREFIX);
      const snapshotId = snapshotIdOf(named ? entry.name : entry.name.slice(TMP_PREFIX.length));
      if (!snapshotId) continue;
      const dir = join(this.root, entry.name);
      const manifest = named ? await manifestState(join(dir, MANIFEST_OBJECT)) : 'missing';
      if (manifest === 'unreadable') continue;
      if (manifest !== 'missing') {
        snapshots.push({ snapshotId, complete: true, modifiedAt: manifest });
        continue;
      }
      // A `.tmp-` directory is an upload (running or interrupted). A snapshot's own directory without
      // its manifest is what an older version's interrupted remove() left: never taken for a
      // snapshot, and cleaned up like an interrupted upload.
      const modifiedAt = await this.lastWrite(dir);
      if (modifiedAt) snapshots.push({ snapshotId, complete: false, modifiedAt, storedAs: named ? `${entry.name} (no manifest)` : entry.name });
    }
    return snapshots;
  }

  /** The newest mtime of a directory being written and its files: a file still growing counts, not only the last one created. */
  private async lastWrite(dir: string): Promise<Date | undefined> {
    const own = await stat(dir).catch(() => undefined);
    if (!own) return undefined;
    let newest = own.mtime;
    for (const name of await readdir(dir).catch(() => [])) {
      const file = await stat(join(dir, name)).catch(() => undefined);
      if (file && file.mtime > newest) newest = file.mtime;
    }
    return newest;
  }

  /** An interrupted upload leaves only its `.tmp-` directory, which list() shows: nothing else to purge. */
  purgeInterrupted(): Promise<string[]> {
    return Promise.resolve([]);
  }

  /**
   * Renamed out of the way first, as S3 and the Object Store drop the manifest first: a removal
   * killed part-way leaves a `.tmp-` directory, which no loader takes for a snapshot and the next
   * retention run removes, never a directory of the snapshot's name with files missing.
   */
  async remove(snapshotId: string): Promise<void> {
    const name = snapshotName(snapshotId);
    const aside = join(this.root, `${TMP_PREFIX}${name}`);
    await rm(aside, { recursive: true, force: true });
    await rename(join(this.root, name), aside).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw error;
    });
    await fsyncPath(this.root);
    await rm(aside, { recursive: true, force: true });
  }
}
