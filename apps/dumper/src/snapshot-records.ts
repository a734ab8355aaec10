import { jetstreamManager } from '@nats-io/jetstream';
import { type KV, Kvm } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import type { NatsConfig } from '@app/common/config';
import { refusedCreation } from '@app/common/messaging';

/**
 * What `<NATS_STREAM>_SNAPSHOTS` remembers of one snapshot of this stream. `seq`: the stream
 * sequence of its announcement, which loaders ack past. No `seq`: this stream's dumper wrote it and
 * was about to announce it; no announcement of it has been seen (yet).
 */
export interface SnapshotRecord {
  seq?: number;
}

/**
 * `<NATS_STREAM>_SNAPSHOTS`: the snapshots this stream's dumper wrote and announced, by id. The
 * stream forgets an announcement after NATS_STREAM_MAX_AGE, which is about when a snapshot expires
 * (both 7 days by default); this record is how retention still knows the snapshot was ours, and
 * where it stood.
 */
export function announcementBucket(nats: NatsConfig): string {
  return `${nats.stream}_SNAPSHOTS`;
}

export async function openSnapshotRecords(nc: NatsConnection, nats: NatsConfig): Promise<KV> {
  const kvm = new Kvm(nc);
  const bucket = announcementBucket(nats);
  try {
    return await kvm.create(bucket, { history: 1, replicas: nats.streamReplicas });
  } catch (error) {
    // A bucket that exists as made otherwise (an operator's settings) is used as it is. One that does
    // not exist is said so: open() does not look, and every put then failed naming no setting.
    const exists = await (await jetstreamManager(nc)).streams.info(`KV_${bucket}`).then(
      () => true,
      () => false,
    );
    if (!exists) throw refusedCreation(`KV bucket ${bucket}`, 'NATS_STREAM_REPLICAS', nats.streamReplicas, error);
    return kvm.open(bucket);
  }
}

/**
 * Recorded before the snapshot's first publish: if that publish is refused for good, or the
 * dumper dies before it, retention still knows the snapshot as this stream's own, never announced,
 * and removes it once it expires (the trigger, delivered again, dumps the date anew).
 */
export async function recordWritten(nc: NatsConnection, nats: NatsConfig, snapshotId: string): Promise<void> {
  await (await openSnapshotRecords(nc, nats)).put(snapshotId, JSON.stringify({} satisfies SnapshotRecord));
}

/** A snapshot removed: its record goes too. */
export async function forgetSnapshot(nc: NatsConnection, nats: NatsConfig, snapshotId: string): Promise<void> {
  await (await openSnapshotRecords(nc, nats)).purge(snapshotId);
}
