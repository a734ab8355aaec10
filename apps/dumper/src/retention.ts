import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { type JetStreamManager, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { type NatsConfig } from '@app/common/config';
import { MANIFEST_FILE, SNAPSHOT_DIR_PREFIX, SUBJECTS } from '@app/common/contract';
import { announcedSnapshots } from '@app/common/messaging';

export interface RetentionResult {
  removed: string[];
  /** Old enough, but some environment has not finished with it yet. */
  keptInUse: string[];
}

/** Stream sequence of each snapshot's snapshot.ready, by snapshot id (those the stream still holds). */
async function readySequences(nc: NatsConnection, nats: NatsConfig): Promise<Map<string, number>> {
  const sequences = new Map<string, number>();
  for (const { seq, body } of await announcedSnapshots(nc, nats)) {
    if (typeof body.snapshotId === 'string') sequences.set(body.snapshotId, seq);
  }
  return sequences;
}

/** The lowest sequence every environment's loader has acked up to: snapshots at or below it are done with. */
async function finishedUpTo(jsm: JetStreamManager, nats: NatsConfig): Promise<number> {
  let floor = Number.POSITIVE_INFINITY;
  for await (const consumer of jsm.consumers.list(nats.stream)) {
    if (consumer.config.filter_subject !== `${nats.subjectPrefix}${SUBJECTS.snapshotReady}` || !consumer.config.durable_name) continue;
    floor = Math.min(floor, consumer.ack_floor.stream_seq);
  }
  return floor;
}

/**
 * SNAPSHOT_RETENTION: removes snapshots older than the retention, except the newest one and any
 * that an environment's loader has not finished with (its durable consumer has not acked that
 * snapshot.ready yet: it is still to be loaded, e.g. a loader that is down). Abandoned temporary
 * directories of crashed dumps go too once they are as old.
 */
export async function applyRetention(nc: NatsConnection, nats: NatsConfig, snapshotDir: string, retentionMs: number, now = Date.now()): Promise<RetentionResult> {
  const result: RetentionResult = { removed: [], keptInUse: [] };
  const entries = (await readdir(snapshotDir, { withFileTypes: true })).filter((e) => e.isDirectory());
  const snapshots: { name: string; id: string; created: number }[] = [];
  for (const entry of entries) {
    const path = join(snapshotDir, entry.name);
    if (entry.name.startsWith(`.tmp-${SNAPSHOT_DIR_PREFIX}`)) {
      if (now - (await stat(path)).mtimeMs > retentionMs) {
        await rm(path, { recursive: true, force: true });
        result.removed.push(entry.name);
      }
      continue;
    }
    if (!entry.name.startsWith(SNAPSHOT_DIR_PREFIX)) continue;
    try {
      const manifest = JSON.parse(await readFile(join(path, MANIFEST_FILE), 'utf8')) as { snapshotId: string; createdAt: string };
      snapshots.push({ name: entry.name, id: manifest.snapshotId, created: Date.parse(manifest.createdAt) });
    } catch {
      // Not a snapshot this dumper wrote completely: never touched.
    }
  }
  snapshots.sort((a, b) => b.created - a.created);
  const expired = snapshots.slice(1).filter((s) => now - s.created > retentionMs);
  if (!expired.length) return result;

  const jsm = await jetstreamManager(nc);
  const [sequences, floor] = await Promise.all([readySequences(nc, nats), finishedUpTo(jsm, nats)]);
  for (const snapshot of expired) {
    const seq = sequences.get(snapshot.id);
    // Gone from the stream: no loader can be handed it any more. Else every loader must be past it.
    if (seq !== undefined && seq > floor) {
      result.keptInUse.push(snapshot.name);
      continue;
    }
    await rm(join(snapshotDir, snapshot.name), { recursive: true, force: true });
    result.removed.push(snapshot.name);
  }
  return result;
}
