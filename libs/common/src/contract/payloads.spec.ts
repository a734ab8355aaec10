import { createHash } from 'node:crypto';
import { errorThrownBy } from '../../../../test/support/errors';
import { InvalidMessageError } from './invalid-message.error';
import { parseSnapshotReadyPayload, parseTriggerPayload } from './payloads';

/** Runs a parser expecting it to refuse the body, and returns the InvalidMessageError. */
function rejectionOf(parse: (body: unknown) => unknown, body: unknown): InvalidMessageError {
  return errorThrownBy(InvalidMessageError, () => parse(body), `accepted: ${JSON.stringify(body)}`);
}

describe('parseTriggerPayload', () => {
  it('accepts {} as "today"', () => {
    expect(parseTriggerPayload({})).toEqual({});
    expect(parseTriggerPayload(JSON.parse('{}'))).toEqual({});
  });

  it('accepts a calendar date', () => {
    expect(parseTriggerPayload(JSON.parse('{"date":"2024-01-05"}'))).toEqual({ date: '2024-01-05' });
    expect(parseTriggerPayload({ date: '2024-02-29' })).toEqual({ date: '2024-02-29' });
  });

  it.each([null, 'today', '2024-01-05', 20240105, true, [], [{ date: '2024-01-05' }]])('rejects %j: not a JSON object', (body) => {
    const error = rejectionOf(parseTriggerPayload, body);
    expect(error.name).toBe('InvalidMessageError');
    expect(error.message).toBe('trigger must be a JSON object');
  });

  it('rejects unknown fields, naming them', () => {
    expect(rejectionOf(parseTriggerPayload, { day: '2024-01-05' }).message).toBe('trigger has unknown field(s): day');
    expect(rejectionOf(parseTriggerPayload, { date: '2024-01-05', force: true, env: 'qa' }).message).toBe('trigger has unknown field(s): force, env');
  });

  it.each([20240105, null, true, '', ['2024-01-05'], { y: 2024 }])('rejects date %j: wrong type', (date) => {
    expect(rejectionOf(parseTriggerPayload, { date }).message).toBe('trigger.date must be a non-empty string');
  });

  it.each(['2024-02-30', '2023-02-29', '2024-13-01', '2024-00-01', '2024-1-5', '05/01/2024', 'yesterday'])('rejects the impossible date %j', (date) => {
    expect(rejectionOf(parseTriggerPayload, { date }).message).toBe(`trigger.date is not a calendar date YYYY-MM-DD: ${JSON.stringify(date)}`);
  });

  it('rejects a date with a time part, naming the field', () => {
    expect(rejectionOf(parseTriggerPayload, { date: '2024-01-05T00:00:00Z' }).message).toMatch(/^trigger\.date /);
  });
});

describe('parseSnapshotReadyPayload', () => {
  const sha = createHash('sha256').update('id,name\n1,Ada\n').digest('hex');
  const valid = () => ({
    snapshotId: '20240105-1a2b3c4d',
    date: '2024-01-05',
    location: '/srv/snapshots/prod_snapshot_20240105-1a2b3c4d',
    createdAt: '2024-01-05T00:03:12.345Z',
    tables: [
      { name: 'public.customers', file: '0001_public.customers.csv', rows: 1, bytes: 14, sha256: sha },
      { name: '"Sales"."Order Items"', file: '0002_Sales.Order Items.csv', rows: 0, bytes: 0, sha256: 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' },
    ],
  });

  it('accepts a valid body and returns its content', () => {
    const body = valid();
    expect(parseSnapshotReadyPayload(JSON.parse(JSON.stringify(body)))).toEqual(body);
  });

  it('drops nothing and adds nothing', () => {
    const parsed = parseSnapshotReadyPayload(valid());
    expect(Object.keys(parsed).sort()).toEqual(['createdAt', 'date', 'location', 'snapshotId', 'tables']);
    expect(Object.keys(parsed.tables[0]).sort()).toEqual(['bytes', 'file', 'name', 'rows', 'sha256']);
  });

  type Body = ReturnType<typeof valid>;
  const withTable = (change: (table: Record<string, unknown>) => void) => {
    const body = valid();
    change(body.tables[0]);
    return body;
  };
  const cases: [string, (body: Body) => unknown, RegExp | string][] = [
    ['not an object (null)', () => null, 'snapshot.ready must be a JSON object'],
    ['not an object (array)', (b) => [b], 'snapshot.ready must be a JSON object'],
    ['not an object (string)', (b) => JSON.stringify(b), 'snapshot.ready must be a JSON object'],
    ['an unknown field', (b) => ({ ...b, environment: 'dev' }), 'snapshot.ready has unknown field(s): environment'],
    ['snapshotId missing', ({ snapshotId: _, ...rest }) => rest, 'snapshot.ready.snapshotId must be a non-empty string'],
    ['snapshotId a number', (b) => ({ ...b, snapshotId: 20240105 }), 'snapshot.ready.snapshotId must be a non-empty string'],
    ['snapshotId a path', (b) => ({ ...b, snapshotId: '../../etc' }), 'snapshot.ready.snapshotId "../../etc" is not a snapshot id'],
    ['snapshotId in upper-case hex', (b) => ({ ...b, snapshotId: '20240105-1A2B3C4D' }), /^snapshot\.ready\.snapshotId /],
    ['snapshotId without its random part', (b) => ({ ...b, snapshotId: '20240105' }), /^snapshot\.ready\.snapshotId /],
    ['snapshotId too long', (b) => ({ ...b, snapshotId: 'x'.repeat(65) }), 'snapshot.ready.snapshotId is longer than 64 characters'],
    ['date missing', ({ date: _, ...rest }) => rest, 'snapshot.ready.date must be a non-empty string'],
    ['date impossible', (b) => ({ ...b, date: '2024-02-30' }), 'snapshot.ready.date is not a calendar date YYYY-MM-DD: "2024-02-30"'],
    ['date a number', (b) => ({ ...b, date: 20240105 }), 'snapshot.ready.date must be a non-empty string'],
    ['location empty', (b) => ({ ...b, location: '' }), 'snapshot.ready.location must be a non-empty string'],
    ['location an object', (b) => ({ ...b, location: { path: '/srv' } }), 'snapshot.ready.location must be a non-empty string'],
    ['createdAt not a timestamp', (b) => ({ ...b, createdAt: 'yesterday noon' }), 'snapshot.ready.createdAt is not a timestamp'],
    ['createdAt a number', (b) => ({ ...b, createdAt: 1704412992345 }), 'snapshot.ready.createdAt must be a non-empty string'],
    ['tables missing', ({ tables: _, ...rest }) => rest, 'snapshot.ready.tables must be a non-empty array'],
    ['tables empty', (b) => ({ ...b, tables: [] }), 'snapshot.ready.tables must be a non-empty array'],
    ['tables an object', (b) => ({ ...b, tables: { 0: b.tables[0] } }), 'snapshot.ready.tables must be a non-empty array'],
    ['a table not an object', (b) => ({ ...b, tables: [b.tables[0], 'public.orders'] }), 'snapshot.ready.tables[1] must be a JSON object'],
    ['a table with an unknown field', () => withTable((t) => (t.schema = 'public')), 'snapshot.ready.tables[0] has unknown field(s): schema'],
    ['a table without a name', () => withTable((t) => delete t.name), 'snapshot.ready.tables[0].name must be a non-empty string'],
    ['a file with a slash', () => withTable((t) => (t.file = 'sub/0001.csv')), 'snapshot.ready.tables[0].file "sub/0001.csv" must be a plain file name inside the snapshot'],
    ['a file going up', () => withTable((t) => (t.file = '../../etc/passwd')), /^snapshot\.ready\.tables\[0\]\.file "\.\.\/\.\.\/etc\/passwd" must be a plain file name/],
    ['a file that is ..', () => withTable((t) => (t.file = '..')), 'snapshot.ready.tables[0].file ".." must be a plain file name inside the snapshot'],
    ['a file that is .', () => withTable((t) => (t.file = '.')), 'snapshot.ready.tables[0].file "." must be a plain file name inside the snapshot'],
    ['a file with a backslash', () => withTable((t) => (t.file = '..\\x.csv')), /^snapshot\.ready\.tables\[0\]\.file .* must be a plain file name/],
    ['an absolute file', () => withTable((t) => (t.file = '/etc/passwd')), /^snapshot\.ready\.tables\[0\]\.file .* must be a plain file name/],
    ['a file with a NUL byte', () => withTable((t) => (t.file = 'a\0.csv')), /^snapshot\.ready\.tables\[0\]\.file .* must be a plain file name/],
    ['a file a number', () => withTable((t) => (t.file = 1)), 'snapshot.ready.tables[0].file must be a non-empty string'],
    ['a sha256 in upper case', () => withTable((t) => (t.sha256 = sha.toUpperCase())), 'snapshot.ready.tables[0].sha256 is not a hex SHA-256 digest'],
    ['a sha256 too short', () => withTable((t) => (t.sha256 = sha.slice(1))), 'snapshot.ready.tables[0].sha256 is not a hex SHA-256 digest'],
    ['a sha256 not hex', () => withTable((t) => (t.sha256 = 'z'.repeat(64))), 'snapshot.ready.tables[0].sha256 is not a hex SHA-256 digest'],
    ['a sha256 too long', () => withTable((t) => (t.sha256 = sha + '0')), 'snapshot.ready.tables[0].sha256 is longer than 64 characters'],
    ['negative rows', () => withTable((t) => (t.rows = -1)), 'snapshot.ready.tables[0].rows must be a whole number >= 0'],
    ['fractional rows', () => withTable((t) => (t.rows = 1.5)), 'snapshot.ready.tables[0].rows must be a whole number >= 0'],
    ['rows as a string', () => withTable((t) => (t.rows = '1')), 'snapshot.ready.tables[0].rows must be a whole number >= 0'],
    ['rows beyond a safe integer', () => withTable((t) => (t.rows = 2 ** 53)), 'snapshot.ready.tables[0].rows must be a whole number >= 0'],
    ['negative bytes', () => withTable((t) => (t.bytes = -14)), 'snapshot.ready.tables[0].bytes must be a whole number >= 0'],
    ['bytes null', () => withTable((t) => (t.bytes = null)), 'snapshot.ready.tables[0].bytes must be a whole number >= 0'],
  ];

  it.each(cases)('rejects %s, naming the field', (_what, make, message) => {
    const error = rejectionOf(parseSnapshotReadyPayload, make(valid()));
    expect(error).toBeInstanceOf(InvalidMessageError);
    if (typeof message === 'string') expect(error.message).toBe(message);
    else expect(error.message).toMatch(message);
  });

  it('names the index of the bad table', () => {
    const body = valid();
    body.tables[1].rows = -3;
    expect(rejectionOf(parseSnapshotReadyPayload, body).message).toBe('snapshot.ready.tables[1].rows must be a whole number >= 0');
  });
});
