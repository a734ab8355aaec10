import type { CronTime } from 'cron';
import { DateTime } from 'luxon';
import { dateInTimeZone } from '@app/common/contract';

const DAY_MS = 86_400_000;

/** The zone's UTC offset at an instant, in minutes. */
function offsetAt(ms: number, timeZone: string): number {
  return DateTime.fromMillis(ms, { zone: timeZone }).offset;
}

/**
 * The instant a wall-clock time of `timeZone` (given as the UTC instant with the same fields) stands
 * for: the earlier one when clocks went back and it occurs twice (so it fires once, at its first
 * occurrence); when clocks went forward over it, the instant the gap ends (a 02:30 that New York
 * skips fires at 03:00, as cron and Airflow fire it).
 */
export function instantOfWallTime(wallMs: number, timeZone: string): number {
  const offsets = new Set([offsetAt(wallMs - DAY_MS, timeZone), offsetAt(wallMs, timeZone), offsetAt(wallMs + DAY_MS, timeZone)]);
  const occurrences = [...offsets].map((offset) => wallMs - offset * 60_000).filter((instant) => offsetAt(instant, timeZone) * 60_000 === wallMs - instant);
  if (occurrences.length) return Math.min(...occurrences);
  // In a gap: read with the offset before it, the time lies past the change; the change is found
  // by halving the day before (offsets change on whole seconds at the finest).
  const before = offsetAt(wallMs - DAY_MS, timeZone);
  let low = wallMs - before * 60_000 - DAY_MS;
  let high = wallMs - before * 60_000;
  while (high - low > 1_000) {
    const middle = Math.floor((low + high) / 2);
    if (offsetAt(middle, timeZone) === before) low = middle;
    else high = middle;
  }
  return high - (high % 1_000);
}

/** The wall-clock time of `instant` in `timeZone`, as the UTC instant with the same fields (what cron walks). */
function wallClockOf(instant: Date, timeZone: string): Date {
  const wall = DateTime.fromJSDate(instant, { zone: timeZone });
  return DateTime.fromObject(
    { year: wall.year, month: wall.month, day: wall.day, hour: wall.hour, minute: wall.minute, second: wall.second, millisecond: wall.millisecond },
    { zone: 'UTC' },
  ).toJSDate();
}

/**
 * The date of the wall-clock time a fire time of the schedule stands for: its own date, except for
 * a time clocks skipped, fired when the gap ends, which may be the next day (Nuuk goes from 23:00
 * to 00:00 -01 on the last Saturday of March: its 23:00 tick fires at 00:00 of the Sunday, and is
 * the Saturday's run). The wall times just before the fire time are walked: the first that fires at
 * it is the tick.
 */
export function tickDate(cronTime: CronTime, timeZone: string, fireTime: Date): string {
  let wall = wallClockOf(new Date(fireTime.getTime() - 1_000), timeZone);
  for (let step = 0; step < 1_000; step++) {
    wall = cronTime.getNextDateFrom(wall, 'UTC').toJSDate();
    const instant = instantOfWallTime(wall.getTime(), timeZone);
    if (instant === fireTime.getTime()) return wall.toISOString().slice(0, 10);
    if (instant > fireTime.getTime()) break;
  }
  return dateInTimeZone(fireTime, timeZone); // not one of the schedule's fire times
}

/**
 * The schedule's next fire time after `from`. The schedule names wall-clock times of `timeZone`, so
 * it is walked on the wall clock (cron evaluated in UTC on the wall time's fields) and each wall
 * time is fired once, at the instant instantOfWallTime gives. cron (4.4) evaluated in the zone gives
 * one tick too many on days clocks go back (for `0 2 * * *` in New York on 2024-11-03 both 01:00 EST
 * and 02:00 EST; in the Azores at 00:00 and 01:00), and none at all on some days they go forward
 * (`0 23 * * *` in Nuuk on 2024-03-30): two dumps on one date, or none, where Airflow runs one.
 */
export function nextFireTime(cronTime: CronTime, timeZone: string, from: Date): Date {
  let next = wallClockOf(from, timeZone);
  for (;;) {
    next = cronTime.getNextDateFrom(next, 'UTC').toJSDate();
    const instant = instantOfWallTime(next.getTime(), timeZone);
    if (instant > from.getTime()) return new Date(instant);
  }
}
