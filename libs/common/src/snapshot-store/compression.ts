import { createGunzip, createGzip } from 'node:zlib';
import type { Transform } from 'node:stream';

/** `none`, or `gzip` at level 1: about 3x on CSV at ~90 MiB/s per core, streamed both ways. */
export type SnapshotCompression = 'none' | 'gzip';

export const COMPRESSED_SUFFIX: Record<SnapshotCompression, string> = { none: '', gzip: '.gz' };

export function compressor(compression: SnapshotCompression): Transform | undefined {
  return compression === 'gzip' ? createGzip({ level: 1 }) : undefined;
}

/**
 * Output chunks of 128 KiB, not zlib's 16 KiB: every chunk passes the digest check and becomes a
 * CopyData message of its own. A loader's gunzip-digest-COPY of the 488 MB pgbench_accounts (scale
 * 50) took 2.49-2.51 s of CPU in 16 KiB chunks against 1.34-1.83 s in 128 KiB ones (3 runs each,
 * alternating), CPU taken from PostgreSQL's COPYs on a full machine. 128 KiB is the dump's buffer
 * size too: larger buffers outlive a young-generation scavenge (see the README's memory notes).
 */
const INFLATED_CHUNK = 128 * 1024;

export function decompressor(compression: SnapshotCompression): Transform | undefined {
  return compression === 'gzip' ? createGunzip({ chunkSize: INFLATED_CHUNK }) : undefined;
}
