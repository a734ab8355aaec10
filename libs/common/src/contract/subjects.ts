/**
 * The subjects of the pipeline. Part of the public contract: users publish triggers by hand
 * and their scripts listen to the events, so these names never change.
 */
export const SUBJECTS = {
  trigger: 'replication.trigger',
  snapshotReady: 'snapshot.ready',
  snapshotLoaded: 'snapshot.loaded',
  snapshotLoadFailed: 'snapshot.load.failed',
  snapshotFailed: 'snapshot.failed',
  /** Each attempt of a dump begins (attempt > 1: a retry), for run history and dashboards. */
  dumpStarted: 'snapshot.dump.started',
  /** Each attempt of a load begins (attempt > 1: a retry). */
  loadStarted: 'snapshot.load.started',
  /** An attempt failed transiently; the next one follows after `retryInMs`. */
  dumpRetrying: 'snapshot.dump.retrying',
  loadRetrying: 'snapshot.load.retrying',
  /** A load attempt that ended without loading: the target holds this snapshot or a newer one. */
  loadSkipped: 'snapshot.load.skipped',
  /** `snapshot.reload.<environment>`: load that environment again from a snapshot, without dumping. */
  reload: 'snapshot.reload',
} as const;

/**
 * A header of `snapshot.ready`: the stream sequence of the trigger whose dump it announces. A trigger
 * delivered again after its snapshot was announced (its ack lost while a cluster elected a leader,
 * or the dumper killed between the two) is recognised by it and not dumped a second time. A header
 * rather than a payload field, so consumers that check the body strictly read it as before.
 */
export const TRIGGER_SEQ_HEADER = 'Db-Fanout-Trigger-Seq';

export function reloadSubject(environment: string): string {
  return `${SUBJECTS.reload}.${environment}`;
}

export type Subject = (typeof SUBJECTS)[keyof typeof SUBJECTS];

/** The subjects the pipeline's stream captures (with the configured prefix). */
export function streamSubjects(prefix: string): string[] {
  return [`${prefix}${SUBJECTS.trigger}`, `${prefix}snapshot.>`];
}
