import type { NatsConfig } from '@app/common/config';
import { InvalidMessageError, parseSnapshotReadyPayload, type SnapshotReadyPayload } from '@app/common/contract';
import { announcedSnapshots } from '@app/common/messaging';
import type { NatsConnection } from '@nats-io/transport-node';
import type { TriggerRef } from './dump-event-ids';

/**
 * The snapshot an earlier delivery of this trigger announced, if one did. A trigger comes again
 * after its snapshot was announced when its ack was lost (a cluster electing a consumer leader, the
 * dumper killed between the announcement and the ack); dumping again would announce a second
 * snapshot of the date. A first delivery has no earlier one, so only redeliveries read the stream.
 * Throws when the announcements cannot be read: the trigger is then delivered again, never dumped
 * on a guess.
 */
export async function snapshotAnnouncedFor(connection: NatsConnection, nats: NatsConfig, date: string, trigger: TriggerRef): Promise<SnapshotReadyPayload | undefined> {
  if (trigger.delivery <= 1) return undefined;
  const answers = (await announcedSnapshots(connection, nats)).filter((announced) => announced.trigger === trigger.seq);
  for (const { body } of answers.reverse()) {
    try {
      const snapshot = parseSnapshotReadyPayload(body);
      if (snapshot.date === date) return snapshot;
    } catch (error) {
      // A forged snapshot.ready carrying the header is not an answer to this trigger.
      if (!(error instanceof InvalidMessageError)) throw error;
    }
  }
  return undefined;
}
