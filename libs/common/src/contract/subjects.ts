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

export function reloadSubject(environment: string): string {
  return `${SUBJECTS.reload}.${environment}`;
}

export type Subject = (typeof SUBJECTS)[keyof typeof SUBJECTS];

/** The subjects the pipeline's stream captures (with the configured prefix). */
export function streamSubjects(prefix: string): string[] {
  return [`${prefix}${SUBJECTS.trigger}`, `${prefix}snapshot.>`];
}
