import type { NatsConfig } from '@app/common/config';
import { InvalidMessageError, parseSnapshotReadyPayload, type SnapshotReadyPayload, SUBJECTS, TRIGGER_SEQ_HEADER } from '@app/common/contract';
import { type AnnouncedSnapshot, type Announcements, BrokerCallStoppedError, type EventPublisher, isOutrunPublish, readAnnouncements, withBrokerRetry } from '@app/common/messaging';
import { errorMessage } from '@app/common/observability';
import type { SnapshotStore } from '@app/common/snapshot-store';
import type { NatsConnection } from '@nats-io/transport-node';
import type { TriggerRef } from './dump-event-ids';
import { forgetSnapshot } from './snapshot-records';

/** How often one announcement reads the stream again after other dates' announcements outran it. */
const ANNOUNCE_ROUNDS = 10;
/** The longest one read of the announcements may take (within the broker retries' budget). */
const READ_TIMEOUT_MS = 30_000;

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
  return answerIn((await readAnnouncements(connection, nats)).announced, date, trigger);
}

export interface AnnounceOnce {
  connection: NatsConnection;
  nats: NatsConfig;
  events: EventPublisher;
  store: SnapshotStore;
  log: (line: string) => void;
  /** The app's stop signal: ends the read's and the publish's retries (withBrokerRetry). */
  signal?: AbortSignal;
}

/**
 * Publishes `snapshot.ready` for a snapshot just written, unless another delivery of the same
 * trigger announced one first; returns the announcement that answers the trigger. Two deliveries
 * of one trigger can dump at once: a redelivery comes while the first dumper is still dumping when
 * its progress acks are lost (a cluster electing a consumer leader), and either may finish first.
 * So the announcements are read, and the publish is stored only if no snapshot.ready reached the
 * stream since (JetStream's expected last subject sequence): whichever delivery publishes second
 * sees the first's answer, removes its own snapshot (never announced, so retention would never
 * touch it) and returns the first one. Another date's announcement in between only makes it read
 * again. Throws when the stream cannot be read or written (after retries), or the app stops
 * (`signal`) while it retries: the trigger is then delivered again and dumps the date anew; a
 * snapshot kept then (not announced) is removed by retention once it expires.
 */
export async function announceOnce(snapshot: SnapshotReadyPayload, trigger: TriggerRef, { connection, nats, events, store, log, signal }: AnnounceOnce): Promise<SnapshotReadyPayload> {
  const removeOwn = (why: string) =>
    store.remove(snapshot.snapshotId).then(
      async () => {
        log(`removed snapshot ${snapshot.snapshotId}, never announced: ${why}`);
        await forgetSnapshot(connection, nats, snapshot.snapshotId).catch(() => undefined);
      },
      (error: unknown) => log(`could not remove snapshot ${snapshot.snapshotId}, never announced (${why}): ${errorMessage(error)}`),
    );
  for (let round = 1; ; round++) {
    let announcements: Announcements;
    try {
      announcements = await withBrokerRetry(connection, 'reading the announcements', (timeoutMs) => readAnnouncements(connection, nats, Math.min(READ_TIMEOUT_MS, timeoutMs)), log, { signal });
    } catch (error) {
      // Before the first publish nothing of ours can be in the stream: the redelivery dumps again.
      // After a refused one it might be (an earlier try of that publish stored, its ack lost), so it stays.
      // So it does on a stop: removing it (and its record, in NATS) could hold the stop for as
      // long again as the broker is out; recorded as written, retention removes it once it expires.
      if (error instanceof BrokerCallStoppedError) log(`kept snapshot ${snapshot.snapshotId}, not announced: ${error.message}`);
      else if (round === 1) await removeOwn('the announcements could not be read');
      throw error;
    }
    // Our own snapshot, when a publish whose ack was lost did reach the stream: announced, so it
    // stays, even if another delivery's announcement of the trigger came after it.
    if (announcements.announced.some((entry) => entry.body.snapshotId === snapshot.snapshotId)) return snapshot;
    const answer = answerIn(announcements.announced, snapshot.date, trigger);
    if (answer) {
      log(`trigger #${trigger.seq} was answered while this delivery dumped: snapshot ${answer.snapshotId} is announced`);
      await removeOwn(`trigger #${trigger.seq} is answered by ${answer.snapshotId}`);
      return answer;
    }
    try {
      await events.publish(SUBJECTS.snapshotReady, snapshot, `ready:${snapshot.snapshotId}`, {
        headers: { [TRIGGER_SEQ_HEADER]: String(trigger.seq) },
        expectLastSubjectSequence: announcements.lastSeq,
        signal,
      });
      return snapshot;
    } catch (error) {
      // Any other failure may hide a publish that was stored (its ack lost): the snapshot stays.
      if (!isOutrunPublish(error) || round >= ANNOUNCE_ROUNDS) throw error;
    }
  }
}

/** The latest well-formed announcement of `date` that carries this trigger's sequence. */
function answerIn(announced: AnnouncedSnapshot[], date: string, trigger: TriggerRef): SnapshotReadyPayload | undefined {
  for (const { body } of announced.filter((entry) => entry.trigger === trigger.seq).reverse()) {
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
