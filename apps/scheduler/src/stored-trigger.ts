import type { SchedulerConfig } from '@app/common/config';
import { SUBJECTS } from '@app/common/contract';
import { readSubject } from '@app/common/messaging';
import type { NatsConnection } from '@nats-io/transport-node';

/** How far before a tick's fire time the look-up starts: clocks of scheduler and broker may disagree by this much. */
const CLOCK_SKEW_MS = 10 * 60_000;

/**
 * Whether the stream holds a trigger published under `msgID` since shortly before `fireTime`. The
 * stream drops a repeated message id only within its duplicate window (2 minutes); a scheduler
 * that publishes a tick later than that (its retries outlasting a partition, a process paused, a
 * publish whose answer was lost) must look first, or the tick is stored twice and production is
 * dumped twice. Triggers are a few messages a day, so the read is small. Throws when the stream
 * cannot be read: the caller then retries rather than publish on a guess.
 */
export async function triggerStored(connection: NatsConnection, config: Pick<SchedulerConfig, 'nats'>, msgID: string, fireTime: Date, timeoutMs = 10_000): Promise<boolean> {
  return (await storedTriggerIds(connection, config, fireTime, timeoutMs)).has(msgID);
}

/**
 * The message ids of the triggers the stream holds since shortly before `since`: one read for many
 * ticks (those a paused scheduler missed, which another scheduler may have stored). Throws when the
 * stream cannot be read.
 */
export async function storedTriggerIds(connection: NatsConnection, config: Pick<SchedulerConfig, 'nats'>, since: Date, timeoutMs = 10_000): Promise<Set<string>> {
  const ids = new Set<string>();
  const startTime = new Date(since.getTime() - CLOCK_SKEW_MS);
  await readSubject(connection, config.nats, { filterSubject: `${config.nats.subjectPrefix}${SUBJECTS.trigger}`, startTime }, timeoutMs, (message) => {
    const id = message.headers?.get('Nats-Msg-Id');
    if (id) ids.add(id);
  });
  return ids;
}

const SCHEDULED_ID = /^scheduled:(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z)$/;

/**
 * The header a scheduled trigger names its schedule in (`SCHEDULE (SCHEDULE_TIMEZONE)`): a restarted
 * scheduler whose schedule changed meanwhile counts none of the new schedule's ticks as missed.
 */
export const SCHEDULE_HEADER = 'Db-Fanout-Schedule';

/** A schedule as SCHEDULE_HEADER names it. */
export function scheduleLabel(config: Pick<SchedulerConfig, 'schedule' | 'timeZone'>): string {
  return `${config.schedule} (${config.timeZone})`;
}

/**
 * The latest scheduled tick the stream holds a trigger for: its fire time (its `scheduled:<time>`
 * message id) and the schedule that fired it (SCHEDULE_HEADER; none from schedulers before it), or
 * undefined. Read at startup: a restarted scheduler knows its last tick, so /health and
 * db_fanout_last_trigger_published_timestamp_seconds do not say "never" for up to a day, and it can
 * tell which ticks passed while no scheduler ran.
 */
export async function lastStoredTick(connection: NatsConnection, config: Pick<SchedulerConfig, 'nats'>, timeoutMs = 10_000): Promise<{ fireTime: Date; schedule?: string } | undefined> {
  let latest: { fireTime: Date; schedule?: string } | undefined;
  await readSubject(connection, config.nats, { filterSubject: `${config.nats.subjectPrefix}${SUBJECTS.trigger}` }, timeoutMs, (message) => {
    const fireTime = SCHEDULED_ID.exec(message.headers?.get('Nats-Msg-Id') ?? '')?.[1];
    if (fireTime && (!latest || Date.parse(fireTime) > latest.fireTime.getTime())) {
      latest = { fireTime: new Date(fireTime), schedule: message.headers?.get(SCHEDULE_HEADER) || undefined };
    }
  });
  return latest;
}
