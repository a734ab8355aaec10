import { missedDays } from './catch-up';

describe('missedDays', () => {
  const base = { schedule: '@daily', timeZone: 'UTC', startDate: '2024-01-01' };

  it('runs every day from START_DATE through today once today\'s tick has passed', () => {
    expect(missedDays({ ...base, startDate: '2024-03-01', now: new Date('2024-03-04T10:00:00Z') })).toEqual(['2024-03-01', '2024-03-02', '2024-03-03', '2024-03-04']);
  });

  it('starts after the last successful run', () => {
    expect(missedDays({ ...base, lastSuccess: '2024-03-02', now: new Date('2024-03-04T10:00:00Z') })).toEqual(['2024-03-03', '2024-03-04']);
    expect(missedDays({ ...base, lastSuccess: '2024-03-04', now: new Date('2024-03-04T10:00:00Z') })).toEqual([]);
  });

  it('leaves today out until its scheduled tick, in SCHEDULE_TIMEZONE', () => {
    const schedule = { ...base, schedule: '0 6 * * *', timeZone: 'America/New_York', lastSuccess: '2024-03-02' };
    // 10:00 UTC is 05:00 in New York (EST): today's 06:00 tick has not come yet.
    expect(missedDays({ ...schedule, now: new Date('2024-03-04T10:00:00Z') })).toEqual(['2024-03-03']);
    expect(missedDays({ ...schedule, now: new Date('2024-03-04T11:30:00Z') })).toEqual(['2024-03-03', '2024-03-04']);
  });

  it('never runs a day before START_DATE, even after an older success', () => {
    expect(missedDays({ ...base, startDate: '2024-03-03', lastSuccess: '2023-12-31', now: new Date('2024-03-04T10:00:00Z') })).toEqual(['2024-03-03', '2024-03-04']);
  });
});
