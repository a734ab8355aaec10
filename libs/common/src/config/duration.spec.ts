import { formatDuration, parseDuration } from './duration';

describe('parseDuration', () => {
  it.each([
    ['500ms', 500],
    ['0ms', 0],
    ['30s', 30_000],
    ['5m', 300_000],
    ['2h', 7_200_000],
    ['7d', 604_800_000],
    ['1.5s', 1_500],
    ['0.5m', 30_000],
    ['  5m  ', 300_000],
  ])('reads %j as %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it('rounds fractional milliseconds to a whole number', () => {
    expect(parseDuration('1.6ms')).toBe(2);
    expect(Number.isInteger(parseDuration('0.0015s'))).toBe(true);
  });

  it.each(['5', '300000', '', '   ', '5 m', '5min', '5minutes', '-5m', 'm', '5x', '.5s', '5m30s', 'abc'])(
    'refuses %j, naming the value and the accepted forms',
    (text) => {
      expect(() => parseDuration(text)).toThrow(`"${text}" is not a duration (use e.g. 500ms, 30s, 5m, 2h, 7d)`);
    },
  );
});

describe('formatDuration', () => {
  it.each([
    [0, '0ms'],
    [500, '500ms'],
    [999, '999ms'],
    [1_000, '1s'],
    [1_500, '1.5s'],
    [30_000, '30s'],
    [59_000, '59s'],
    [60_000, '1m'],
    [90_000, '1.5m'],
    [300_000, '5m'],
    [7_200_000, '120m'],
  ])('writes %d ms as %j', (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
  });

  it.each([0, 250, 1_000, 2_500, 45_000, 60_000, 150_000, 300_000, 3_600_000])(
    'writes %d ms in a form parseDuration reads back to the same value',
    (ms) => {
      expect(parseDuration(formatDuration(ms))).toBe(ms);
    },
  );
});
