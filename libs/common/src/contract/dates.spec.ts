import { compactDate, dateInTimeZone, isCalendarDate, isValidTimeZone } from './dates';

describe('isCalendarDate', () => {
  it.each(['2024-01-05', '2024-01-01', '2024-12-31', '2024-02-29', '2000-02-29', '2023-04-30', '1999-12-31'])(
    'accepts the real date %s',
    (date) => {
      expect(isCalendarDate(date)).toBe(true);
    },
  );

  it.each([
    '2024-02-30',
    '2023-02-29',
    '1900-02-29',
    '2024-04-31',
    '2024-13-01',
    '2024-00-10',
    '2024-01-00',
    '2024-01-32',
    '2024-1-5',
    '20240105',
    '2024/01/05',
    '2024-01-05T00:00:00Z',
    ' 2024-01-05',
    '2024-01-05 ',
    '',
    'today',
  ])('rejects %j', (date) => {
    expect(isCalendarDate(date)).toBe(false);
  });
});

describe('dateInTimeZone', () => {
  const lateEvening = new Date('2024-01-05T23:30:00Z');

  it('gives the UTC calendar date in UTC', () => {
    expect(dateInTimeZone(lateEvening, 'UTC')).toBe('2024-01-05');
  });

  it('gives the next day where it is already tomorrow', () => {
    expect(dateInTimeZone(lateEvening, 'Asia/Tokyo')).toBe('2024-01-06');
  });

  it('gives the previous day where it is still yesterday', () => {
    expect(dateInTimeZone(new Date('2024-01-05T05:00:00Z'), 'America/Los_Angeles')).toBe('2024-01-04');
  });

  it('follows daylight saving time (Paris is UTC+2 in summer)', () => {
    expect(dateInTimeZone(new Date('2024-07-14T21:59:00Z'), 'Europe/Paris')).toBe('2024-07-14');
    expect(dateInTimeZone(new Date('2024-07-14T22:00:00Z'), 'Europe/Paris')).toBe('2024-07-15');
  });

  it('always answers YYYY-MM-DD, a real calendar date', () => {
    const date = dateInTimeZone(new Date('2024-03-09T12:00:00Z'), 'Europe/Berlin');
    expect(date).toBe('2024-03-09');
    expect(isCalendarDate(date)).toBe(true);
  });
});

describe('isValidTimeZone', () => {
  it.each(['UTC', 'Europe/Paris', 'America/New_York', 'Asia/Kolkata'])('accepts %s', (zone) => {
    expect(isValidTimeZone(zone)).toBe(true);
  });

  it.each(['Mars/Olympus_Mons', 'Europe/Pariss', 'not a zone', ''])('rejects %j', (zone) => {
    expect(isValidTimeZone(zone)).toBe(false);
  });
});

describe('compactDate', () => {
  it('drops the dashes, as in snapshot names', () => {
    expect(compactDate('2024-01-05')).toBe('20240105');
    expect(compactDate('1999-12-31')).toBe('19991231');
  });
});
