import { constants } from 'node:fs';
import { type FileHandle, open, realpath, stat } from 'node:fs/promises';
import { isAbsolute, join, relative, sep } from 'node:path';
import { MANIFEST_OBJECT, type SnapshotSource } from './snapshot-store';

/** Read size of a snapshot file: the loader's COPY takes 1 MiB pieces best (README, "Read buffer"). */
const READ_BUFFER = 1 << 20;
const MAX_MANIFEST_BYTES = 64 << 20;

/** Thrown when the files on disk do not match what was announced: permanent, never retried. */
export class SnapshotFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SnapshotFileError';
  }
}

/** `child` lies strictly inside `parent` (both real paths). */
export function isInside(parent: string, child: string): boolean {
  const rel = relative(parent, child);
  return rel !== '' && !rel.startsWith('..') && !isAbsolute(rel) && !rel.includes(`..${sep}`);
}

/**
 * A snapshot directory under SNAPSHOT_DIR, read as a snapshot source (the `fs` store). Only regular
 * files inside the directory are read (see `openInside`): a table file or manifest.json that is a
 * symbolic link out of it fails the load, naming the file.
 */
export function directorySource(dir: string): SnapshotSource & { label: string } {
  // The directory's real path, once per source: each of its files is resolved against it.
  let root: Promise<string> | undefined;
  const rootOf = () => (root ??= realpath(dir));
  return {
    label: dir,
    manifest: async () => {
      const { handle, size } = await openInside(await rootOf(), MANIFEST_OBJECT, join(dir, MANIFEST_OBJECT));
      try {
        if (size > MAX_MANIFEST_BYTES) throw new SnapshotFileError(`${join(dir, MANIFEST_OBJECT)} is larger than ${MAX_MANIFEST_BYTES} bytes`);
        return await handle.readFile();
      } finally {
        await handle.close();
      }
    },
    storedSize: async (file) => {
      const real = await rootOf()
        .then((r) => fileInside(r, file, `snapshot file ${file} in ${dir}`))
        .catch((error: unknown) => {
          if (error instanceof SnapshotFileError) throw error;
          return undefined;
        });
      const info = real === undefined ? undefined : await stat(real).catch(() => undefined);
      return info?.isFile() ? info.size : undefined;
    },
    open: async (file) => {
      const { handle } = await openInside(await rootOf(), file, `snapshot file ${file} in ${dir}`);
      return handle.createReadStream({ highWaterMark: READ_BUFFER });
    },
  };
}

/**
 * The real path of `file` of the snapshot directory whose real path is `root`, refused
 * (SnapshotFileError naming `label`) when a symbolic link leads it outside the directory: SNAPSHOT_DIR is checked once for the directory
 * (resolveSnapshotDir), and a link planted in a snapshot would otherwise have the loader read any
 * file this process may read into a target. The dumper writes only regular files; a link between
 * files of the same snapshot is harmless and still read. A missing file rejects as realpath does (ENOENT).
 */
async function fileInside(root: string, file: string, label: string): Promise<string> {
  const real = await realpath(join(root, file));
  if (!isInside(root, real)) throw new SnapshotFileError(`${label} leads outside the snapshot directory (a symbolic link): only regular files inside it are read`);
  return real;
}

/**
 * Opens `file` of a snapshot directory for reading: inside it once links are resolved, and a
 * regular file. Opened without following a link (one swapped in after the check is refused, ELOOP)
 * and without waiting (a FIFO would block the open until a writer came), then checked on the open
 * descriptor itself.
 */
async function openInside(root: string, file: string, label: string): Promise<{ handle: FileHandle; size: number }> {
  const real = await fileInside(root, file, label);
  const handle = await open(real, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ELOOP') throw new SnapshotFileError(`${label} leads outside the snapshot directory (a symbolic link): only regular files inside it are read`);
    throw error;
  });
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw new SnapshotFileError(`${label} is not a regular file`);
    return { handle, size: info.size };
  } catch (error) {
    await handle.close();
    throw error;
  }
}

