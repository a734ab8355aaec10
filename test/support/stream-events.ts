import { jetstream } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';

export interface StoredEvent {
  subject: string;
  data: Record<string, unknown>;
  msgId?: string;
}

/**
 * Every message the stream holds, in order: what really happened, unlike a core subscription that
 * misses what was published while it was disconnected (a NATS restart). `auth` is for a server
 * that requires a user and password.
 */
export async function streamEvents(natsUrl: string, stream: string, prefix: string, auth?: { user: string; pass: string }): Promise<StoredEvent[]> {
  const nc = await connect({ servers: natsUrl.split(','), ...auth });
  try {
    const consumer = await jetstream(nc).consumers.get(stream);
    const events: StoredEvent[] = [];
    for (;;) {
      const msg = await consumer.next({ expires: 1_000 });
      if (!msg) return events;
      let data: Record<string, unknown>;
      try {
        data = msg.json();
      } catch {
        data = { raw: msg.string() };
      }
      events.push({ subject: msg.subject.slice(prefix.length), data, msgId: msg.headers?.get('Nats-Msg-Id') || undefined });
    }
  } finally {
    await nc.close();
  }
}

export const ofSubject = (events: StoredEvent[], subject: string) => events.filter((e) => e.subject === subject).map((e) => e.data);
