import type { LoadDrift } from './payloads';

/**
 * The run history as the scheduler keeps it (KV bucket `<NATS_STREAM>_RUNS`, `GET /api/runs`) and the
 * CLI reads it (`db-fanout status`, `runs --json`): one record per run, folded from the pipeline's events.
 */
/**
 * `superseded`: the environment skipped this snapshot because it already held a newer one
 * (`supersededBy`); nothing is wrong and nothing is left to do for it.
 */
export type StepState = 'queued' | 'running' | 'up_for_retry' | 'success' | 'failed' | 'superseded';

export interface StepRecord {
  state: StepState;
  attempts: number;
  startedAt?: string;
  endedAt?: string;
  rows?: number;
  bytes?: number;
  snapshotId?: string;
  /** The dump: when its data was taken from production (the run's date is only its label). */
  takenAt?: string;
  /** The dump: where its snapshot is kept (`snapshot.ready.location`: a directory, `nats://...` or `s3://...`). */
  location?: string;
  /** A load in state `superseded`: the newer snapshot the environment held. */
  supersededBy?: string;
  /**
   * A load under SCHEMA_DRIFT=common-columns that left something out (from its `snapshot.loaded`):
   * the snapshot tables the environment lacks, the snapshot columns it lacks, the columns that got
   * their defaults. Absent when the environment's schema matched the snapshot.
   */
  drift?: LoadDrift;
  error?: string;
  /** Present after the message came again (its worker died mid-work): the delivery of the try shown. */
  delivery?: number;
  /** With `delivery`: the tries the earlier deliveries made, counted in `attempts`. */
  triesBefore?: number;
  /** A load a `db-fanout reload` asked for: the request's stream sequence (the step shows that try). */
  reloadSequence?: number;
}

/** One run: a date's trigger, its dump and each environment's load (environments appear as they report). */
export interface RunRecord {
  date: string;
  triggeredAt?: string;
  /**
   * The stream sequence of this run's trigger (absent in records of older releases). A
   * `snapshot.dump.started` names its trigger's in its message id: the ledger tells this run's dump
   * start from an earlier run's, late, by it rather than by the clocks of dumper and broker.
   */
  triggerSeq?: number;
  /** A trigger of the date that came while this run was still going: the next run starts from it (its own trigger time). */
  nextTriggerAt?: string;
  /** With `nextTriggerAt`: that trigger's stream sequence. */
  nextTriggerSeq?: number;
  dump: StepRecord;
  loads: Record<string, StepRecord>;
  /** On a re-run of the date: the earlier runs' snapshots, whose late events no longer change this run. */
  earlierSnapshots?: string[];
}
