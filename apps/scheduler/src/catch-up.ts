import { CronTime } from 'cron';
import { DateTime } from 'luxon';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { isFinished, type RunRecord } from './run-ledger/run-record';
import { nextFireTime, tickDate } from './schedule-ticks';

/**
 * The dates a scheduler that was down should still run (Airflow's catchup): the dates of SCHEDULE's
 * ticks in SCHEDULE_TIMEZONE from START_DATE (or the day after the last successful run) through
 * `now`, oldest first. A weekly schedule catches up weekly; a schedule firing several times a day
 * gives its date once (a run dumps production as it is now: the date only labels it).
 * Finding a tick takes the cron library milliseconds: years of missed dates take seconds, so the
 * walk lets the event loop breathe (health checks, heartbeats) as it goes.
 */
export async function missedTickDates(options: { schedule: string; timeZone: string; startDate: string; lastSuccess?: string; now?: Date }): Promise<string[]> {
  const { timeZone } = options;
  const now = options.now ?? new Date();
  const cron = new CronTime(options.schedule, timeZone);
  const from = options.lastSuccess && options.lastSuccess >= options.startDate ? DateTime.fromISO(options.lastSuccess, { zone: timeZone }).plus({ days: 1 }) : DateTime.fromISO(options.startDate, { zone: timeZone });
  const dates: string[] = [];
  // One tick per date is enough: after a tick, look for the next one from the start of the next day.
  let after = from.startOf('day').minus({ milliseconds: 1 });
  for (let step = 1; ; step++) {
    if (step % 20 === 0) await yieldToEventLoop();
    // The scheduler's own ticks: each wall-clock time once, across clock changes (schedule-ticks).
    const tick = nextFireTime(cron, timeZone, after.toJSDate());
    if (tick.getTime() > now.getTime()) return dates;
    const date = tickDate(cron, timeZone, tick);
    if (dates[dates.length - 1] !== date) dates.push(date);
    // Never before the tick itself: a tick clocks skipped fires when the gap ends, which may be the next day's start.
    const nextDay = DateTime.fromISO(date, { zone: timeZone }).plus({ days: 1 }).startOf('day').minus({ milliseconds: 1 });
    after = nextDay.toMillis() > tick.getTime() ? nextDay : DateTime.fromJSDate(tick, { zone: timeZone });
  }
}

/** Whether the ledger's record of a date is a run: it was triggered (load events alone, e.g. of a reload, are none). */
export function isRun(run: RunRecord | undefined): run is RunRecord {
  return run !== undefined && (run.triggeredAt !== undefined || run.dump.state !== 'queued');
}

/**
 * The dates catch-up goes through, oldest first, and how many of them lie before the last success:
 * - every missed tick date after the last successful run (or from START_DATE without one), as
 *   missedTickDates gives them, whether or not they have a run (catch-up waits on those);
 * - the gap just before that last success: each tick date of SCHEDULE after the success before it
 *   (or, with none, from the oldest run in the ledger; never before START_DATE) that has no run at
 *   all. A restart during catch-up leaves such a gap once a later date (today's tick, a manual
 *   trigger) succeeded meanwhile. A date with a run, finished or not, is not in it: a run still
 *   going finishes on its own, and one that never will (its dumper killed on the trigger's last
 *   delivery) must not hold catch-up at every start; nor does the history further back, where a
 *   day left out long ago (or a manual run of an old date) would start a backfill nobody asked for.
 */
export async function catchUpDates(options: {
  schedule: string;
  timeZone: string;
  startDate: string;
  lastSuccess?: string;
  runs: readonly RunRecord[];
  now?: Date;
}): Promise<{ dates: string[]; gaps: number }> {
  const { schedule, timeZone, startDate, lastSuccess, now } = options;
  const after = await missedTickDates({ schedule, timeZone, startDate, lastSuccess, now });
  if (!lastSuccess || lastSuccess < startDate) return { dates: after, gaps: 0 };
  const runs = new Map(options.runs.filter((run) => isRun(run)).map((run) => [run.date, run]));
  const earlier = [...runs.values()].filter((run) => run.date < lastSuccess);
  const previousSuccess = earlier.filter((run) => run.dump.state === 'success').map((run) => run.date).sort().pop();
  const oldest = earlier.map((run) => run.date).sort()[0];
  if (!previousSuccess && !oldest) return { dates: after, gaps: 0 };
  // After the previous success (missedTickDates walks from the day after `lastSuccess`), or from the oldest run.
  const walked = previousSuccess
    ? await missedTickDates({ schedule, timeZone, startDate, lastSuccess: previousSuccess, now })
    : await missedTickDates({ schedule, timeZone, startDate: oldest > startDate ? oldest : startDate, now });
  const gaps = walked.filter((date) => date < lastSuccess && !runs.has(date));
  return { dates: [...gaps, ...after], gaps: gaps.length };
}

/**
 * Whether catch-up may go on after `run`: its dump failed, or it succeeded and each environment
 * whose loader consumer existed when the snapshot was announced (`environments`: name -> consumer
 * creation time) has finished loading it. An environment whose consumer is gone (retired) is not
 * waited for, and one added later never receives this snapshot.
 */
export function runIsOver(run: RunRecord | undefined, environments: Map<string, string>): boolean {
  if (!run) return false;
  if (run.dump.state === 'failed') return true;
  if (run.dump.state !== 'success') return false;
  const announcedAt = run.dump.endedAt ? Date.parse(run.dump.endedAt) : Number.POSITIVE_INFINITY;
  return [...environments].every(([environment, created]) => Date.parse(created) > announcedAt || isFinished(run.loads[environment]?.state));
}
