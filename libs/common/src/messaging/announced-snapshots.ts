import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { nanos, type NatsConnection } from '@nats-io/transport-node';
import type { NatsConfig } from '../config/app-config';
import { SUBJECTS } from '../contract/subjects';

/**
 * Every snapshot.ready the stream still holds, oldest first, with its stream sequence: read through
 * an ephemeral consumer on that one subject (a single filter works on nats-server 2.9).
 */
export async function announcedSnapshots(connection: NatsConnection, nats: NatsConfig): Promise<{ seq: number; body: Record<string, unknown> }[]> {
  const jsm = await jetstreamManager(connection);
  const info = await jsm.consumers.add(nats.stream, {
    filter_subject: `${nats.subjectPrefix}${SUBJECTS.snapshotReady}`,
    ack_policy: AckPolicy.None,
    deliver_policy: DeliverPolicy.All,
    inactive_threshold: nanos(30_000),
  });
  const announced: { seq: number; body: Record<string, unknown> }[] = [];
  try {
    const consumer = await jetstream(connection).consumers.get(nats.stream, info.name);
    for (;;) {
      const message = await consumer.next({ expires: 1_000 });
      if (!message) return announced;
      try {
        announced.push({ seq: message.seq, body: message.json<Record<string, unknown>>() });
      } catch {
        // A forged, non-JSON snapshot.ready announces nothing.
      }
    }
  } finally {
    await jsm.consumers.delete(nats.stream, info.name).catch(() => undefined);
  }
}
