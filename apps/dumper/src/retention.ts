import { basename } from 'node:path';
import { type JetStreamManager, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { type NatsConfig } from '@app/common/config';
import { SNAPSHOT_ID_PATTERN, snapshotDirName, SUBJECTS } from '@app/common/contract';
import { announcedSnapshots, pendingReloads } from '@app/common/messaging';
import { errorMessage } from '@app/common/observability';
import type { SnapshotStore } from '@app/common/snapshot-store';
import { openSnapshotRecords, type SnapshotRecord } from './snapshot-records';

export interface RetentionResult {
  removed: string[];
  /** Old enough, but some environment's loader has not acked its announcement, or a reload of it, yet. */
  keptInUse: string[];
  /** Old enough, but not this stream's (another pipeline's, or written by hand): never touched. */
  notAnnounced: string[];
  /**
   * What interrupted uploads left below the level of objects and retention removed (one line per
   * kind, counts only), and each leftover it could not remove or check, with why: never a reason
   * to stop removing expired snapshots.
   */
  leftovers: string[];
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

interface StoredSnapshot {
  name: string;
  id: string;
  created: number;
}

/** Complete snapshots with a readable manifest, newest first; anything else is not a snapshot (never touched). */
async function completeSnapshots(store: SnapshotStore, ids: string[]): Promise<StoredSnapshot[]> {
  const snapshots: StoredSnapshot[] = [];
  for (const id of ids) {
    try {
      const source = await store.open(store.locationOf(id));
      const manifest = JSON.parse((await source.manifest()).toString('utf8')) as { snapshotId: string; createdAt: string };
      if (manifest.snapshotId !== id) continue;
      const created = Date.parse(manifest.createdAt);
      if (!Number.isNaN(created)) snapshots.push({ name: snapshotDirName(id), id, created });
    } catch {
      // Not a snapshot written completely: never touched.
    }
  }
  return snapshots.sort((a, b) => b.created - a.created);
}

/**
 * SNAPSHOT_RETENTION, after each dump. A snapshot directory is removed only when all of these hold:
 * it is older than the retention and not the newest; this stream announced it (its snapshot.ready
 * is in the stream, or was recorded in `<NATS_STREAM>_SNAPSHOTS` while it was) and every
 * environment's loader consumer has acked past that announcement, or this stream's dumper wrote it
 * and never announced it (recorded before the publish, which was refused or never made); and no
 * `db-fanout reload` of it waits for or is being loaded by a loader (its reload consumer has not
 * acked it). The announcements are read to
 * the end (the consumer reports nothing pending) and any broker error throws before anything is
 * removed. The leftovers of interrupted uploads (a dump killed before its manifest: its objects,
 * and what the store keeps of an object it never finished) go once nothing has been written to them
 * for as long: an upload still running in another dumper keeps writing; one that cannot be
 * removed is reported in `leftovers` and the expired snapshots go all the same. The same rules
 * hold in every snapshot store.
 */
export async function applyRetention(nc: NatsConnection, nats: NatsConfig, store: SnapshotStore, retentionMs: number, now = Date.now()): Promise<RetentionResult> {
  const result: RetentionResult = { removed: [], keptInUse: [], notAnnounced: [], leftovers: [] };
  const listed = await store.list();
  const snapshots = await completeSnapshots(
    store,
    listed.filter((s) => s.complete).map((s) => s.snapshotId),
  );

  // Everything the broker has to say, before any removal: a failure here throws with nothing removed.
  const kv = await openSnapshotRecords(nc, nats);
  const onDisk = new Set(snapshots.map((s) => s.id));
  for (const { seq, body } of await announcedSnapshots(nc, nats)) {
    const id = body.snapshotId;
    if (typeof id !== 'string' || !SNAPSHOT_ID_PATTERN.test(id) || !onDisk.has(id)) continue;
    if (typeof body.location === 'string' && basename(body.location) !== snapshotDirName(id)) continue;
    await kv.put(id, JSON.stringify({ seq } satisfies SnapshotRecord));
  }
  const floor = await loadersAckedUpTo(await jetstreamManager(nc), nats);
  const reloading = await pendingReloads(nc, nats);
  const records = new Map<string, SnapshotRecord>();
  for (const snapshot of snapshots) {
    const entry = await kv.get(snapshot.id);
    if (entry?.value.length) records.set(snapshot.id, entry.json<SnapshotRecord>());
  }

  // Leftovers of interrupted uploads: idle for the retention, so no dumper is still writing them.
  // Each on its own: one this process may not delete (a root-owned `.tmp-` dir of another
  // pipeline in a shared SNAPSHOT_DIR, an object under Object Lock) is reported in `leftovers`
  // and the run goes on; it used to throw here, and no expired snapshot was ever removed again.
  for (const leftover of listed.filter((s) => !s.complete)) {
    if (now - leftover.modifiedAt.getTime() > retentionMs) {
      const name = leftover.storedAs ?? `${snapshotDirName(leftover.snapshotId)} (no manifest)`;
      try {
        await store.remove(leftover.snapshotId);
        result.removed.push(name);
      } catch (error) {
        result.leftovers.push(`${name}: not removed (${errorMessage(error)})`);
      }
    }
  }
  try {
    result.leftovers.push(...(await store.purgeInterrupted(new Date(now - retentionMs))));
  } catch (error) {
    result.leftovers.push(`unfinished uploads not purged (${errorMessage(error)})`);
  }
  for (const snapshot of snapshots.slice(1).filter((s) => now - s.created > retentionMs)) {
    const record = records.get(snapshot.id);
    if (!record) {
      result.notAnnounced.push(snapshot.name);
    } else if ((record.seq !== undefined && record.seq > floor) || reloading.has(snapshot.id) || (await pendingReloads(nc, nats)).has(snapshot.id)) {
      // Read again just before the removal: a `db-fanout reload` published while this run removed
      // other (large) snapshots would otherwise lose its snapshot.
      result.keptInUse.push(snapshot.name);
    } else {
      // No seq: our dumper wrote it and its announcement never reached the stream (this run read
      // them all), so no loader was ever told of it.
      await store.remove(snapshot.id);
      await kv.purge(snapshot.id);
      result.removed.push(record.seq === undefined ? `${snapshot.name} (never announced)` : snapshot.name);
    }
  }
  return result;
}
