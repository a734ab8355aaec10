import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { type JetStreamManager, jetstreamManager } from '@nats-io/jetstream';
import { type KV, Kvm } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { type NatsConfig } from '@app/common/config';
import { MANIFEST_FILE, SNAPSHOT_DIR_PREFIX, SNAPSHOT_ID_PATTERN, snapshotDirName, SUBJECTS } from '@app/common/contract';
import { announcedSnapshots } from '@app/common/messaging';

export interface RetentionResult {
  removed: string[];
  /** Old enough, but some environment's loader has not acked its announcement yet. */
  keptInUse: string[];
  /** Old enough, but never announced on this stream (another pipeline's, or written by hand): never touched. */
  notAnnounced: string[];
}

/** What the bucket remembers of one announcement: its stream sequence, which loaders ack past. */
interface AnnouncementRecord {
  seq: number;
}

/**
 * `<NATS_STREAM>_SNAPSHOTS`: the snapshots this stream announced, by id. The stream forgets an
 * announcement after NATS_STREAM_MAX_AGE, which is about when a snapshot expires (both 7 days by
 * default); this record is how retention still knows the snapshot was ours, and where it stood.
 */
export function announcementBucket(nats: NatsConfig): string {
  return `${nats.stream}_SNAPSHOTS`;
}

async function openBucket(nc: NatsConnection, nats: NatsConfig): Promise<KV> {
  const kvm = new Kvm(nc);
  return kvm.create(announcementBucket(nats), { history: 1, replicas: nats.streamReplicas }).catch(() => kvm.open(announcementBucket(nats)));
}

/**
 * The lowest stream sequence every loader has acked up to (its durable consumer's ack floor): an
 * announcement at or below it is done with everywhere. A loader that is down, or holds a snapshot
 * unacked, keeps the floor below its announcement.
 */
async function loadersAckedUpTo(jsm: JetStreamManager, nats: NatsConfig): Promise<number> {
  let floor = Number.POSITIVE_INFINITY;
  for await (const consumer of jsm.consumers.list(nats.stream)) {
    if (consumer.config.filter_subject !== `${nats.subjectPrefix}${SUBJECTS.snapshotReady}` || !consumer.config.durable_name) continue;
    floor = Math.min(floor, consumer.ack_floor.stream_seq);
  }
  return floor;
}

interface SnapshotOnDisk {
  name: string;
  id: string;
  created: number;
}

/** `prod_snapshot_*` directories with a readable manifest; anything else is not a snapshot (never touched). */
async function snapshotsOnDisk(snapshotDir: string, entries: string[]): Promise<SnapshotOnDisk[]> {
  const snapshots: SnapshotOnDisk[] = [];
  for (const name of entries) {
    if (!name.startsWith(SNAPSHOT_DIR_PREFIX)) continue;
    try {
      const manifest = JSON.parse(await readFile(join(snapshotDir, name, MANIFEST_FILE), 'utf8')) as { snapshotId: string; createdAt: string };
      if (typeof manifest.snapshotId !== 'string' || name !== snapshotDirName(manifest.snapshotId)) continue;
      const created = Date.parse(manifest.createdAt);
      if (!Number.isNaN(created)) snapshots.push({ name, id: manifest.snapshotId, created });
    } catch {
      // Not a snapshot written completely: never touched.
    }
  }
  return snapshots.sort((a, b) => b.created - a.created);
}

/**
 * SNAPSHOT_RETENTION, after each dump. A snapshot directory is removed only when all of these hold:
 * it is older than the retention and not the newest; this stream announced it (its snapshot.ready
 * is in the stream, or was recorded in `<NATS_STREAM>_SNAPSHOTS` while it was); and every
 * environment's loader consumer has acked past that announcement. The announcements are read to
 * the end (the consumer reports nothing pending) and any broker error throws before anything is
 * removed. Abandoned temporary directories of crashed dumps go once they are as old.
 */
export async function applyRetention(nc: NatsConnection, nats: NatsConfig, snapshotDir: string, retentionMs: number, now = Date.now()): Promise<RetentionResult> {
  const result: RetentionResult = { removed: [], keptInUse: [], notAnnounced: [] };
  const entries = (await readdir(snapshotDir, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name);
  const snapshots = await snapshotsOnDisk(snapshotDir, entries);

  // Everything the broker has to say, before any removal: a failure here throws with nothing removed.
  const kv = await openBucket(nc, nats);
  const onDisk = new Set(snapshots.map((s) => s.id));
  for (const { seq, body } of await announcedSnapshots(nc, nats)) {
    const id = body.snapshotId;
    if (typeof id !== 'string' || !SNAPSHOT_ID_PATTERN.test(id) || !onDisk.has(id)) continue;
    if (typeof body.location === 'string' && basename(body.location) !== snapshotDirName(id)) continue;
    await kv.put(id, JSON.stringify({ seq } satisfies AnnouncementRecord));
  }
  const floor = await loadersAckedUpTo(await jetstreamManager(nc), nats);
  const announced = new Map<string, number>();
  for (const snapshot of snapshots) {
    const entry = await kv.get(snapshot.id);
    if (entry?.value.length) announced.set(snapshot.id, entry.json<AnnouncementRecord>().seq);
  }

  for (const name of entries) {
    if (!name.startsWith(`.tmp-${SNAPSHOT_DIR_PREFIX}`)) continue;
    const path = join(snapshotDir, name);
    if (now - (await stat(path)).mtimeMs > retentionMs) {
      await rm(path, { recursive: true, force: true });
      result.removed.push(name);
    }
  }
  for (const snapshot of snapshots.slice(1).filter((s) => now - s.created > retentionMs)) {
    const seq = announced.get(snapshot.id);
    if (seq === undefined) {
      result.notAnnounced.push(snapshot.name);
    } else if (seq > floor) {
      result.keptInUse.push(snapshot.name);
    } else {
      await rm(join(snapshotDir, snapshot.name), { recursive: true, force: true });
      await kv.purge(snapshot.id);
      result.removed.push(snapshot.name);
    }
  }
  return result;
}
