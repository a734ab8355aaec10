import { type RunRecord, SUBJECTS } from '@app/common/contract';

// The types live in the contract (the CLI reads the same records); re-exported for the ledger's code.
export type { RunRecord, StepRecord, StepState } from '@app/common/contract';

export function newRun(date: string): RunRecord {
  return { date, dump: { state: 'queued', attempts: 0 }, loads: {} };
}

/** `20240105-1a2b3c4d` -> `2024-01-05`. */
export function dateOfSnapshot(snapshotId: string): string | undefined {
  const match = /^(\d{4})(\d{2})(\d{2})-/.exec(snapshotId);
  return match ? `${match[1]}-${match[2]}-${match[3]}` : undefined;
}

type Body = Record<string, unknown>;
const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
const num = (v: unknown) => (typeof v === 'number' ? v : undefined);

/** The run a pipeline event belongs to (its date), or undefined for events that carry none. */
export function runDateOf(subject: string, body: Body): string | undefined {
  if ([SUBJECTS.loadStarted, SUBJECTS.loadRetrying, SUBJECTS.snapshotLoaded, SUBJECTS.snapshotLoadFailed].includes(subject as never)) {
    return dateOfSnapshot(str(body.snapshotId) ?? '');
  }
  return str(body.date);
}

/**
 * Folds one event into its run. Events may arrive again (redelivery) or late; a finished step
 * keeps its outcome unless a later attempt of the same step starts again.
 */
export function applyEvent(run: RunRecord, subject: string, body: Body, at: string): RunRecord {
  const next: RunRecord = { ...run, dump: { ...run.dump }, loads: { ...run.loads } };
  switch (subject) {
    case SUBJECTS.trigger:
      next.triggeredAt ??= at;
      return next;
    case SUBJECTS.dumpStarted: {
      const attempt = num(body.attempt) ?? 1;
      if (attempt < next.dump.attempts) return next;
      next.dump = { ...next.dump, state: 'running', attempts: attempt, startedAt: next.dump.startedAt ?? str(body.startedAt) ?? at, error: undefined };
      return next;
    }
    case SUBJECTS.snapshotReady: {
      const tables = Array.isArray(body.tables) ? (body.tables as Body[]) : [];
      next.dump = {
        ...next.dump,
        state: 'success',
        attempts: Math.max(next.dump.attempts, 1),
        endedAt: at,
        snapshotId: str(body.snapshotId),
        rows: tables.reduce((sum, t) => sum + (num(t.rows) ?? 0), 0),
        bytes: tables.reduce((sum, t) => sum + (num(t.bytes) ?? 0), 0),
      };
      return next;
    }
    case SUBJECTS.dumpRetrying:
      next.dump = { ...next.dump, state: 'up_for_retry', attempts: Math.max(next.dump.attempts, num(body.attempt) ?? 1), error: str(body.error) };
      return next;
    case SUBJECTS.snapshotFailed:
      next.dump = { ...next.dump, state: 'failed', attempts: num(body.attempts) ?? next.dump.attempts, endedAt: at, error: str(body.error) };
      return next;
    case SUBJECTS.loadStarted:
    case SUBJECTS.loadRetrying:
    case SUBJECTS.snapshotLoaded:
    case SUBJECTS.snapshotLoadFailed: {
      const environment = str(body.environment);
      if (!environment) return next;
      const step = next.loads[environment] ?? { state: 'queued', attempts: 0 };
      if (subject === SUBJECTS.loadStarted) {
        const attempt = num(body.attempt) ?? 1;
        if (step.snapshotId === str(body.snapshotId) && attempt < step.attempts) return next;
        next.loads[environment] = { ...step, state: 'running', attempts: attempt, snapshotId: str(body.snapshotId), startedAt: step.startedAt ?? str(body.startedAt) ?? at, error: undefined };
      } else if (subject === SUBJECTS.loadRetrying) {
        next.loads[environment] = { ...step, state: 'up_for_retry', attempts: Math.max(step.attempts, num(body.attempt) ?? 1), snapshotId: str(body.snapshotId), error: str(body.error) };
      } else if (subject === SUBJECTS.snapshotLoaded) {
        next.loads[environment] = { ...step, state: 'success', attempts: num(body.attempts) ?? step.attempts, snapshotId: str(body.snapshotId), rows: num(body.rows), endedAt: at, error: undefined };
      } else {
        next.loads[environment] = { ...step, state: 'failed', attempts: num(body.attempts) ?? step.attempts, snapshotId: str(body.snapshotId), endedAt: at, error: str(body.error) };
      }
      return next;
    }
    default:
      return next;
  }
}
