/**
 * The run history as the scheduler keeps it (KV bucket `<NATS_STREAM>_RUNS`, `GET /api/runs`) and the
 * CLI reads it (`db-fanout status`, `runs --json`): one record per run, folded from the pipeline's events.
 */
export type StepState = 'queued' | 'running' | 'up_for_retry' | 'success' | 'failed';

export interface StepRecord {
  state: StepState;
  attempts: number;
  startedAt?: string;
  endedAt?: string;
  rows?: number;
  bytes?: number;
  snapshotId?: string;
  error?: string;
}

/** One run: a date's trigger, its dump and each environment's load (environments appear as they report). */
export interface RunRecord {
  date: string;
  triggeredAt?: string;
  dump: StepRecord;
  loads: Record<string, StepRecord>;
}
