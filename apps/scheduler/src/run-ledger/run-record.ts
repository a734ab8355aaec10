import { type LoadDrift, type RunRecord, type StepRecord, type StepState, SUBJECTS } from '@app/common/contract';

// The types live in the contract (the CLI reads the same records); re-exported for the ledger's code.
export type { RunRecord, StepRecord, StepState } from '@app/common/contract';

/** The states a step never leaves for an earlier one. */
export const FINISHED_STATES: readonly StepState[] = ['success', 'failed', 'superseded'];

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
/** An ISO 8601 instant with its time and zone (as `toISOString` writes), normalised; undefined for anything else. */
const ISO_INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;
function validIso(v: unknown): string | undefined {
  if (typeof v !== 'string' || !ISO_INSTANT.test(v)) return undefined;
  const ms = Date.parse(v);
  return Number.isFinite(ms) ? new Date(ms).toISOString() : undefined;
}
const strings = (v: unknown) => (Array.isArray(v) ? v.filter((item): item is string => typeof item === 'string') : []);

/**
 * The `drift` of a snapshot.loaded: its lists of names, keeping only strings (anyone who may
 * publish on the stream can put anything there), or undefined when nothing was left out.
 * `unsetSequences` only where it names any (older loaders never send it).
 */
function driftOf(value: unknown): LoadDrift | undefined {
  if (!value || typeof value !== 'object') return undefined;
  const body = value as Body;
  const drift: LoadDrift = { skippedTables: strings(body.skippedTables), leftOutColumns: strings(body.leftOutColumns), defaultedColumns: strings(body.defaultedColumns) };
  const unset = strings(body.unsetSequences);
  if (unset.length) drift.unsetSequences = unset;
  return drift.skippedTables.length + drift.leftOutColumns.length + drift.defaultedColumns.length + unset.length > 0 ? drift : undefined;
}

const LOAD_SUBJECTS: readonly string[] = [SUBJECTS.loadStarted, SUBJECTS.loadRetrying, SUBJECTS.snapshotLoaded, SUBJECTS.snapshotLoadFailed, SUBJECTS.loadSkipped];

/** The run a pipeline event belongs to (its date), or undefined for events that carry none. */
export function runDateOf(subject: string, body: Body): string | undefined {
  if (LOAD_SUBJECTS.includes(subject)) return dateOfSnapshot(str(body.snapshotId) ?? '');
  return str(body.date);
}

/** `dump-started:<date>:<trigger seq>:<delivery>:<attempt>` (the dumper's dumpEventIds.started). */
const DUMP_STARTED_ID = /^dump-started:[^:]+:(\d+):\d+:\d+$/;

/**
 * Which trigger an event stored at stream sequence `seq` under message id `msgId` is of, where it
 * says: a trigger's own sequence; for a `snapshot.dump.started`, the sequence of the trigger its
 * dump works for, in its message id (undefined without one, e.g. an event published by hand).
 */
export function triggerSeqOf(subject: string, seq: number, msgId: string | undefined): number | undefined {
  if (subject === SUBJECTS.trigger) return seq;
  if (subject !== SUBJECTS.dumpStarted) return undefined;
  const triggerSeq = Number(DUMP_STARTED_ID.exec(msgId ?? '')?.[1]);
  return Number.isSafeInteger(triggerSeq) && triggerSeq > 0 ? triggerSeq : undefined;
}

export function isFinished(state: StepState | undefined): boolean {
  return state !== undefined && FINISHED_STATES.includes(state);
}

/** More than RETRIES can be (100): tries order by the message's delivery first, then attempt. */
const ATTEMPTS_PER_DELIVERY = 1_000;

/** Where a try stands among a step's tries: attempt `attempt` of the message's `delivery`. */
function rankOf(delivery: number, attempt: number): number {
  return (delivery - 1) * ATTEMPTS_PER_DELIVERY + attempt;
}

/** The rank of the try a step is at: its attempts count on across deliveries (`triesBefore`). */
function rankOfStep(step: StepRecord): number {
  return rankOf(step.delivery ?? 1, step.attempts - (step.triesBefore ?? 0));
}

/**
 * How far a step has come: tries in order (by delivery, then attempt), each `running` then
 * `up_for_retry`, and every outcome after all of them. Among outcomes, `success` (the data is
 * there) outranks `failed`, which outranks `superseded`: a late failure or skip of a snapshot the
 * environment did load never turns it red. (A `db-fanout reload` starts the step afresh: see loadEvent.)
 */
function progress(state: StepState, rank: number): number {
  switch (state) {
    case 'queued':
      return 0;
    case 'running':
      return rank * 2;
    case 'up_for_retry':
      return rank * 2 + 1;
    case 'superseded':
      return Number.MAX_SAFE_INTEGER - 2;
    case 'failed':
      return Number.MAX_SAFE_INTEGER - 1;
    case 'success':
      return Number.MAX_SAFE_INTEGER;
  }
}

/** Whether `state` at attempt `attempt` of `delivery` is a step forward for `step` (anything else is a late or repeated report). */
function advance(step: StepRecord, state: StepState, attempt: number, delivery = 1): boolean {
  return progress(state, rankOf(delivery, attempt)) > progress(step.state, rankOfStep(step));
}

/**
 * `step` at attempt `attempt` of `delivery`, in `state`: a later delivery (the message came again
 * after its worker died) keeps the earlier deliveries' tries in `triesBefore`, so attempts count on.
 * One delivery's events may come in any order; a later delivery's come after them (they are
 * published by the worker that started after the earlier one died).
 */
function tryOf(step: StepRecord, state: StepState, attempt: number, delivery: number): StepRecord {
  const triesBefore = delivery > (step.delivery ?? 1) ? step.attempts : (step.triesBefore ?? 0);
  return { ...step, state, attempts: triesBefore + attempt, ...(delivery > 1 ? { delivery, triesBefore } : {}) };
}

/** The attempts of an outcome that reports its delivery's own count: on top of the earlier deliveries'. */
function outcomeAttempts(step: StepRecord, reported: number | undefined): number {
  return Math.max(step.attempts, (step.triesBefore ?? 0) + (reported ?? 1));
}

const earlier = (a: string | undefined, b: string | undefined) => (a && b ? (Date.parse(a) <= Date.parse(b) ? a : b) : (a ?? b));

/**
 * Folds one event into its run. Events can come late, out of order and more than once (a publish
 * retried after the stream's duplicate window, a redelivered message announcing its start again),
 * so every step only moves forward (see `progress`), and each outcome keeps the times of the event
 * that first reported it.
 *
 * A date can run more than once (a trigger after its run finished, a redelivered trigger): the new
 * run starts with its trigger or its dump's start, and from then on the events of the earlier
 * snapshot (listed in `earlierSnapshots`) no longer change the row, so it shows the new run's own
 * times. `at` is when the broker stored the event. `triggerSeq` is which trigger the event is of,
 * when known: for a trigger, its own stream sequence; for a `snapshot.dump.started`, the sequence of
 * the trigger its dump works for (in its message id). Where the run's trigger is known too, it tells
 * a dump start of this run from an earlier or the next run's exactly, whatever the clocks say.
 */
export function applyEvent(run: RunRecord, subject: string, body: Body, at: string, triggerSeq?: number): RunRecord {
  const next: RunRecord = { ...run, dump: { ...run.dump }, loads: { ...run.loads } };
  switch (subject) {
    case SUBJECTS.trigger:
      if (isFinished(next.dump.state) && next.dump.endedAt && Date.parse(at) > Date.parse(next.dump.endedAt)) return { ...startAgain(next), ...trigger(at, triggerSeq) };
      if (next.triggeredAt && Date.parse(at) > Date.parse(next.triggeredAt) && !next.nextTriggerAt) {
        next.nextTriggerAt = at;
        if (triggerSeq !== undefined) next.nextTriggerSeq = triggerSeq;
      }
      if (!next.triggeredAt) Object.assign(next, trigger(at, triggerSeq));
      return next;
    case SUBJECTS.dumpStarted:
      return dumpStarted(next, num(body.attempt) ?? 1, deliveryOf(body), str(body.startedAt) ?? at, triggerSeq);
    case SUBJECTS.dumpRetrying: {
      const attempt = num(body.attempt) ?? 1;
      const delivery = deliveryOf(body);
      if (advance(next.dump, 'up_for_retry', attempt, delivery)) next.dump = { ...tryOf(next.dump, 'up_for_retry', attempt, delivery), error: str(body.error) };
      else if (isFinished(next.dump.state) && delivery === (next.dump.delivery ?? 1)) next.dump = { ...next.dump, attempts: outcomeAttempts(next.dump, attempt + 1) };
      return next;
    }
    case SUBJECTS.snapshotReady:
      return snapshotReady(next, body, at);
    case SUBJECTS.snapshotFailed: {
      if (advance(next.dump, 'failed', 0)) {
        next.dump = { ...next.dump, state: 'failed', attempts: outcomeAttempts(next.dump, num(body.attempts)), endedAt: at, error: str(body.error) };
      }
      return next;
    }
    default:
      if (LOAD_SUBJECTS.includes(subject)) return loadEvent(next, subject, body, at);
      return next;
  }
}

/** A run's trigger: when the broker stored it, and its stream sequence when known. */
function trigger(triggeredAt: string | undefined, triggerSeq: number | undefined): Pick<RunRecord, 'triggeredAt' | 'triggerSeq'> {
  return triggerSeq === undefined ? { triggeredAt } : { triggeredAt, triggerSeq };
}

/** The trigger the next run of the date starts from: the one waiting in `nextTriggerAt`, else the run's own (a redelivered trigger). */
function nextRunTrigger(run: RunRecord): Pick<RunRecord, 'triggeredAt' | 'triggerSeq'> {
  return run.nextTriggerAt ? trigger(run.nextTriggerAt, run.nextTriggerSeq) : trigger(run.triggeredAt, run.triggerSeq);
}

/** A new run of the same date: the earlier snapshot's events stay out of it. */
function startAgain(run: RunRecord): RunRecord {
  const previous = run.dump.snapshotId;
  const earlierSnapshots = run.earlierSnapshots ?? [];
  // Present (even empty, after a failed dump) on every re-run.
  return { date: run.date, dump: { state: 'queued', attempts: 0 }, loads: {}, earlierSnapshots: previous && !earlierSnapshots.includes(previous) ? [...earlierSnapshots, previous] : earlierSnapshots };
}

/** The delivery an event reports (1 when it says none: events of older releases, a first delivery). */
function deliveryOf(body: Body): number {
  const delivery = num(body.delivery);
  return delivery !== undefined && Number.isSafeInteger(delivery) && delivery >= 1 ? delivery : 1;
}

function dumpStarted(run: RunRecord, attempt: number, delivery: number, startedAt: string, triggerSeq: number | undefined): RunRecord {
  let next = run;
  // Which trigger the dump works for, when the event and the run both say: exact, whatever the clocks
  // (startedAt is the dumper's, triggeredAt the broker's). An earlier trigger's is an earlier run's,
  // announced late; a later trigger's, once this run's dump finished, is the next run.
  const seqs = triggerSeq !== undefined && next.triggerSeq !== undefined;
  if (seqs && triggerSeq < next.triggerSeq!) return next;
  const laterTrigger = seqs && triggerSeq > next.triggerSeq!;
  // By the times (the same trigger, redelivered, or either side does not say): a dump that starts
  // after this run's dump ended is the next run of the date; an earlier start is a late announcement
  // of this run's own dump.
  const startsAfterEnd = next.dump.endedAt !== undefined && Date.parse(startedAt) > Date.parse(next.dump.endedAt);
  if (isFinished(next.dump.state) && (laterTrigger || startsAfterEnd)) {
    const from = nextRunTrigger(next);
    next = { ...startAgain(next), ...trigger(from.triggeredAt, triggerSeq ?? from.triggerSeq) };
  }
  // On a re-run, a dump started before the run's trigger is an earlier run's, announced late; unless
  // it names the run's own trigger (or a later one): then it is this run's, and the dumper's clock is
  // behind the broker's.
  const ownTrigger = triggerSeq !== undefined && next.triggerSeq !== undefined && triggerSeq >= next.triggerSeq;
  if (!ownTrigger && next.earlierSnapshots && next.triggeredAt && Date.parse(startedAt) < Date.parse(next.triggeredAt)) return next;
  const dump = next.dump;
  const firstStart = attempt === 1 ? earlier(dump.startedAt, startedAt) : (dump.startedAt ?? startedAt);
  if (advance(dump, 'running', attempt, delivery)) {
    next.dump = { ...tryOf(dump, 'running', attempt, delivery), startedAt: firstStart, error: undefined };
  } else if (delivery === (dump.delivery ?? 1)) {
    // Late: the state stays, but the run did get this far (snapshot.ready carries no attempt count).
    next.dump = { ...dump, attempts: outcomeAttempts(dump, attempt), startedAt: firstStart };
  } else {
    next.dump = { ...dump, startedAt: firstStart };
  }
  return next;
}

function snapshotReady(run: RunRecord, body: Body, at: string): RunRecord {
  const snapshotId = str(body.snapshotId);
  if (!snapshotId || run.earlierSnapshots?.includes(snapshotId)) return run;
  const createdAt = str(body.createdAt);
  const takenAt = str(body.takenAt) ?? createdAt;
  let next = run;
  const current = run.dump.snapshotId;
  if (current && current !== snapshotId) {
    // Two snapshots of one date: the one taken later is this run; the other is an earlier run's.
    if (takenAt && run.dump.takenAt && Date.parse(takenAt) < Date.parse(run.dump.takenAt)) {
      return { ...run, earlierSnapshots: [...(run.earlierSnapshots ?? []), snapshotId] };
    }
    next = { ...startAgain(run), ...nextRunTrigger(run) };
    next.loads = Object.fromEntries(Object.entries(run.loads).filter(([, step]) => step.snapshotId === snapshotId));
  } else if (!current && run.dump.state === 'failed' && createdAt && run.dump.endedAt) {
    // A snapshot made before this run's dump failed is an earlier run's; one made after, the next run's.
    if (Date.parse(createdAt) <= Date.parse(run.dump.endedAt)) return { ...run, earlierSnapshots: [...(run.earlierSnapshots ?? []), snapshotId] };
    next = { ...startAgain(run), ...nextRunTrigger(run) };
    next.loads = Object.fromEntries(Object.entries(run.loads).filter(([, step]) => step.snapshotId === snapshotId));
  }
  const tables = Array.isArray(body.tables) ? (body.tables as Body[]) : [];
  const dump = next.dump;
  if (dump.state === 'success' && dump.snapshotId === snapshotId) return next; // announced again
  next.dump = {
    ...dump,
    state: 'success',
    attempts: Math.max(dump.attempts, 1),
    endedAt: createdAt ?? at,
    snapshotId,
    takenAt,
    location: str(body.location),
    rows: tables.reduce((sum, t) => sum + (num(t.rows) ?? 0), 0),
    bytes: tables.reduce((sum, t) => sum + (num(t.bytes) ?? 0), 0),
    error: undefined,
  };
  return next;
}

const LOADER_ENV_NAME = /^[a-z0-9-]+$/;

function loadEvent(run: RunRecord, subject: string, body: Body, at: string): RunRecord {
  const environment = str(body.environment);
  const snapshotId = str(body.snapshotId);
  // Only names a loader can have (LOADER_ENV): anyone on the stream can publish, and a name made of
  // terminal escapes would reach every `db-fanout status`, or stand as a column that never ends.
  // A `db-fanout reload` is a new try of the step, asked for by hand: it starts afresh (its own
  // times, attempts and outcome: a reload that fails shows failed, one that loads a failed snapshot
  // success). The events of the load or reload before it no longer change the step. It may load an
  // earlier run's snapshot of the date (the latest announced, after the re-run's dump failed).
  const reload = num(body.reloadSequence) ?? 0;
  if (!environment || !LOADER_ENV_NAME.test(environment) || !snapshotId || (!reload && run.earlierSnapshots?.includes(snapshotId))) return run;
  const known = run.loads[environment];
  let step: StepRecord = known ?? { state: 'queued', attempts: 0, snapshotId };
  if (known && known.snapshotId !== snapshotId) {
    // The run's own snapshot wins over one it does not know (yet), unless a reload asks for it; a
    // late event of an older reload never undoes a newer one; any other is replaced (the run's own
    // load replaces a reload of an earlier run's snapshot).
    if (!reload && known.snapshotId === run.dump.snapshotId) return run;
    if (reload && reload < (known.reloadSequence ?? 0)) return run;
    step = { state: 'queued', attempts: 0, snapshotId };
  }
  if (reload > (step.reloadSequence ?? 0)) step = { state: 'queued', attempts: 0, snapshotId, reloadSequence: reload };
  else if (reload < (step.reloadSequence ?? 0)) return run;
  const next = { ...run, loads: { ...run.loads } };
  const attempt = num(body.attempt) ?? 1;
  const delivery = deliveryOf(body);
  switch (subject) {
    case SUBJECTS.loadStarted: {
      const startedAt = str(body.startedAt) ?? at;
      if (advance(step, 'running', attempt, delivery)) step = { ...tryOf(step, 'running', attempt, delivery), error: undefined };
      step = { ...step, startedAt: attempt === 1 ? earlier(step.startedAt, startedAt) : (step.startedAt ?? startedAt) };
      break;
    }
    case SUBJECTS.loadRetrying:
      if (advance(step, 'up_for_retry', attempt, delivery)) step = { ...tryOf(step, 'up_for_retry', attempt, delivery), error: str(body.error) };
      break;
    case SUBJECTS.snapshotLoaded:
      if (advance(step, 'success', 0)) {
        step = {
          ...step,
          state: 'success',
          attempts: outcomeAttempts(step, num(body.attempts)),
          rows: num(body.rows),
          drift: driftOf(body.drift),
          // When the load committed (the loader's loadedAt), not when its announcement got through:
          // that can be much later (the broker out at commit; a loader killed before announcing,
          // whose load a redelivery announces from the ledger). startedAt is the loader's clock too.
          // Events of older loaders carry none: when the broker stored the event.
          endedAt: validIso(body.loadedAt) ?? at,
          error: undefined,
          supersededBy: undefined,
        };
      } else if (step.state === 'success' && step.rows === undefined) {
        // The success was first seen in an already-loaded skip, which carries none of the load's
        // facts: this is the load's own report of them (its time stays the first report's, unless
        // it says when the load committed).
        step = { ...step, rows: num(body.rows), drift: driftOf(body.drift), endedAt: validIso(body.loadedAt) ?? step.endedAt };
      }
      break;
    case SUBJECTS.snapshotLoadFailed:
      if (advance(step, 'failed', 0)) step = { ...step, state: 'failed', attempts: outcomeAttempts(step, num(body.attempts)), endedAt: at, error: str(body.error) };
      break;
    case SUBJECTS.loadSkipped:
      // already-loaded: the environment holds this snapshot, which is a success like any other.
      if (str(body.reason) === 'already-loaded') {
        if (advance(step, 'success', 0)) step = { ...step, state: 'success', attempts: Math.max(step.attempts, 1), endedAt: at, error: undefined, supersededBy: undefined };
      } else if (advance(step, 'superseded', 0)) {
        step = { ...step, state: 'superseded', attempts: Math.max(step.attempts, 1), endedAt: at, supersededBy: str(body.by), error: undefined };
      }
      break;
  }
  next.loads[environment] = step;
  return next;
}
