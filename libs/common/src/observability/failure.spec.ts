import { describeFailure } from './failure';

function pgError(message: string, code: string, detail?: string): Error {
  return Object.assign(new Error(message), { code, detail });
}

describe('describeFailure', () => {
  it('carries the SQLSTATE and leaves out DETAIL, which can quote row values', () => {
    const error = pgError('duplicate key value violates unique constraint "customers_email_key"', '23505', 'Key (email)=(ada@example.com) already exists.');
    expect(describeFailure(error, { detail: false })).toEqual({ error: 'duplicate key value violates unique constraint "customers_email_key"', code: '23505' });
  });

  it('withholds the value a data exception quotes in its message', () => {
    const error = pgError('invalid input syntax for type integer: "4111 1111 1111 1111"', '22P02');
    const failure = describeFailure(error, { detail: false });
    expect(failure.error).not.toContain('4111');
    expect(failure).toEqual({ error: 'invalid input syntax for type integer: (value withheld; ERROR_DETAIL=true shows it)', code: '22P02' });
  });

  it('keeps DETAIL and the value with ERROR_DETAIL=true', () => {
    const error = pgError('invalid input syntax for type integer: "x1"', '22P02', 'row 3');
    expect(describeFailure(error, { detail: true })).toEqual({ error: 'invalid input syntax for type integer: "x1" (DETAIL: row 3)', code: '22P02' });
  });

  it('uses our own short codes and masks secrets', () => {
    const error = Object.assign(new Error('cannot reach postgres://loader:s3cret@db/app'), { code: 'ECONNREFUSED' });
    expect(describeFailure(error, { detail: false })).toEqual({ error: 'cannot reach postgres://loader:***@db/app', code: 'ECONNREFUSED' });
    expect(describeFailure('plain text', { detail: false })).toEqual({ error: 'plain text' });
  });
});
