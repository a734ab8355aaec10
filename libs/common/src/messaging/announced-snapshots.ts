import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { NatsConfig } from '../config/app-config';
import { SUBJECTS, TRIGGER_SEQ_HEADER } from '../contract/subjects';
import { readSubject } from './subject-reader';

export interface AnnouncedSnapshot {
  /** Stream sequence of the snapshot.ready: a loader that acked past it is done with the snapshot. */
  seq: number;
  body: Record<string, unknown>;
  /** The stream sequence of the trigger it answered (TRIGGER_SEQ_HEADER); absent in announcements older than it or published by hand. */
  trigger?: number;
}

/** The stream's announcements, and where the subject stood when they were read. */
export interface Announcements {
  announced: AnnouncedSnapshot[];
  /**
   * The stream sequence of the last snapshot.ready read (0 if none), forged ones included: a
   * publish that expects this as the subject's last sequence is refused if another announcement
   * landed since (see EventPublisher's `expectLastSubjectSequence`).
   */
  lastSeq: number;
}

/**
 * Every snapshot.ready the stream holds, oldest first, with its stream sequence: read through an
 * ephemeral consumer on that one subject (a single filter works on nats-server 2.9) until it has
 * nothing pending. Throws rather than return part of the list (a broker that does not answer, or
 * a list not read within `timeoutMs`): retention deletes on the strength of it.
 */
export async function announcedSnapshots(connection: NatsConnection, nats: NatsConfig, timeoutMs = 30_000): Promise<AnnouncedSnapshot[]> {
  return (await readAnnouncements(connection, nats, timeoutMs)).announced;
}

/** announcedSnapshots, with the subject's last sequence as it was read. */
export async function readAnnouncements(connection: NatsConnection, nats: NatsConfig, timeoutMs = 30_000): Promise<Announcements> {
  const announced: AnnouncedSnapshot[] = [];
  let lastSeq = 0;
  await readSubject(connection, nats, { filterSubject: `${nats.subjectPrefix}${SUBJECTS.snapshotReady}` }, timeoutMs, (message) => {
    lastSeq = Math.max(lastSeq, message.seq);
    try {
      const trigger = Number(message.headers?.get(TRIGGER_SEQ_HEADER) || Number.NaN);
      announced.push({ seq: message.seq, body: message.json<Record<string, unknown>>(), ...(Number.isSafeInteger(trigger) && trigger > 0 ? { trigger } : {}) });
    } catch {
      // A forged, non-JSON snapshot.ready announces nothing.
    }
  });
  return { announced, lastSeq };
}

/**
 * The snapshot ids that `db-fanout reload` asked for and some environment's reload consumer
 * (`loader-<env>-reload`) has not acked yet: waiting for its loader, or being loaded now. Their
 * snapshot.ready was acked long ago, so only this keeps retention from removing a snapshot a
 * reload is about to read. Throws like announcedSnapshots: retention deletes on the strength of it.
 */
export async function pendingReloads(connection: NatsConnection, nats: NatsConfig, timeoutMs = 30_000): Promise<Set<string>> {
  const reloadSubjects = `${nats.subjectPrefix}${SUBJECTS.reload}.`;
  const ackedUpTo = new Map<string, number>();
  for await (const consumer of (await jetstreamManager(connection)).consumers.list(nats.stream)) {
    const subject = consumer.config.filter_subject;
    if (consumer.config.durable_name && subject?.startsWith(reloadSubjects)) ackedUpTo.set(subject, consumer.ack_floor.stream_seq);
  }
  const pending = new Set<string>();
  if (ackedUpTo.size === 0) return pending;
  const startSeq = Math.min(...ackedUpTo.values()) + 1;
  await readSubject(connection, nats, { filterSubject: `${reloadSubjects}>`, startSeq }, timeoutMs, (message) => {
    // A reload for an environment without a reload consumer is never loaded: it holds nothing.
    if (message.seq <= (ackedUpTo.get(message.subject) ?? Number.POSITIVE_INFINITY)) return;
    try {
      const snapshotId = message.json<Record<string, unknown>>().snapshotId;
      if (typeof snapshotId === 'string') pending.add(snapshotId);
    } catch {
      // Not JSON: the loader terminates it unread; it names no snapshot.
    }
  });
  return pending;
}
