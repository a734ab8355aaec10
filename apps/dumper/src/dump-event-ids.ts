/**
 * Which trigger a dump works for: the trigger message's stream sequence (the same on every
 * redelivery, new for every trigger, so a re-run of a date is a new trigger) and its delivery.
 */
export interface TriggerRef {
  seq: number;
  delivery: number;
}

/**
 * Message ids of the dumper's events, so that a publish retried after a lost ack is stored once.
 * One attempt is (trigger, delivery, attempt within the delivery): a redelivered trigger whose
 * snapshot was not announced dumps again and says so (one that was is answered from the
 * announcement, see earlier-announcement.ts); one trigger fails at most once.
 */
export const dumpEventIds = {
  started: (date: string, trigger: TriggerRef, attempt: number) => `dump-started:${date}:${trigger.seq}:${trigger.delivery}:${attempt}`,
  retrying: (date: string, trigger: TriggerRef, attempt: number) => `dump-retrying:${date}:${trigger.seq}:${trigger.delivery}:${attempt}`,
  failed: (date: string, trigger: TriggerRef) => `dump-failed:${date}:${trigger.seq}`,
};
