import { Logger } from '@nestjs/common';
import { AckPolicy, DeliverPolicy, jetstreamManager } from '@nats-io/jetstream';
import { nanos, type NatsConnection } from '@nats-io/transport-node';
import type { NatsConfig } from '../config/app-config';
import { SUBJECTS, TRIGGER_SEQ_HEADER } from '../contract/subjects';
import { ACK, PullConsumer } from './pull-consumer';

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
  const jsm = await jetstreamManager(connection);
  const info = await jsm.consumers.add(nats.stream, {
    filter_subject: `${nats.subjectPrefix}${SUBJECTS.snapshotReady}`,
    ack_policy: AckPolicy.None,
    deliver_policy: DeliverPolicy.All,
    inactive_threshold: nanos(30_000),
  });
  const announced: AnnouncedSnapshot[] = [];
  let lastSeq = 0;
  try {
    const reader = new PullConsumer({ connection, stream: nats.stream, name: info.name, logger: new Logger('Announcements'), expiresMs: 2_000 });
    await reader.readToEnd((message) => {
      lastSeq = Math.max(lastSeq, message.seq);
      try {
        const trigger = Number(message.headers?.get(TRIGGER_SEQ_HEADER) || Number.NaN);
        announced.push({ seq: message.seq, body: message.json<Record<string, unknown>>(), ...(Number.isSafeInteger(trigger) && trigger > 0 ? { trigger } : {}) });
      } catch {
        // A forged, non-JSON snapshot.ready announces nothing.
      }
      return Promise.resolve(ACK);
    }, timeoutMs);
    return { announced, lastSeq };
  } finally {
    await jsm.consumers.delete(nats.stream, info.name).catch(() => undefined);
  }
}
