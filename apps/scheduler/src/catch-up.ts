import { CronTime } from 'cron';
import { DateTime } from 'luxon';

/**
 * The days a scheduler that was down should still run (Airflow's catchup): every day from the day
 * after the last successful run (or START_DATE) through today, today included only once its
 * scheduled tick has passed. Oldest first.
 */
export function missedDays(options: { schedule: string; timeZone: string; startDate: string; lastSuccess?: string; now?: Date }): string[] {
  const now = DateTime.fromJSDate(options.now ?? new Date()).setZone(options.timeZone);
  const today = now.toISODate()!;
  const startOfToday = now.startOf('day');
  const firstTickToday = new CronTime(options.schedule, options.timeZone).getNextDateFrom(startOfToday.minus({ milliseconds: 1 }).toJSDate(), options.timeZone);
  const last = firstTickToday.toMillis() <= now.toMillis() ? today : startOfToday.minus({ days: 1 }).toISODate()!;

  const from = options.lastSuccess && options.lastSuccess >= options.startDate ? DateTime.fromISO(options.lastSuccess).plus({ days: 1 }).toISODate()! : options.startDate;
  const days: string[] = [];
  for (let day = DateTime.fromISO(from); day.toISODate()! <= last; day = day.plus({ days: 1 })) days.push(day.toISODate()!);
  return days;
}
