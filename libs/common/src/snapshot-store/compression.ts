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
 * CopyData message of its own, and a scale-50 table (488 MB) in 16 KiB pieces cost a loader about
 * twice the CPU of the inflating itself (1.4-2.0 s against 0.8-0.9 s, 3 runs each, alternating),
 * on two cores shared with PostgreSQL's three COPYs. 128 KiB is the dump's buffer size too: larger
 * ones outlive a young-generation scavenge (see the README's memory notes).
 */
const INFLATED_CHUNK = 128 * 1024;

export function decompressor(compression: SnapshotCompression): Transform | undefined {
  return compression === 'gzip' ? createGunzip({ chunkSize: INFLATED_CHUNK }) : undefined;
}
