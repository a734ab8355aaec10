import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Client } from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { ADMIN_URL } from '../../../../test/support/databases';
import { describeFailure, locateFailure } from './failure';

const WITHHELD = '(value withheld; ERROR_DETAIL=true shows it)';

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

  it("withholds the production value wherever PostgreSQL's own data exceptions put it", async () => {
    const client = new Client({ connectionString: ADMIN_URL });
    await client.connect();
    const failureOf = async (sql: string) => {
      const error = await client.query(sql).then(() => undefined, (e: unknown) => e);
      expect(error).toBeInstanceOf(Error);
      return describeFailure(error, { detail: false });
    };
    try {
      // A column narrower in the environment than in production: the value sits in the middle.
      expect(await failureOf("SELECT '41111'::smallint")).toEqual({ error: `value ${WITHHELD} is out of range for type smallint`, code: '22003' });
      expect(await failureOf("SELECT '4111e400'::float8")).toEqual({ error: `${WITHHELD} is out of range for type double precision`, code: '22003' });
      expect(await failureOf("SELECT '4111-13-45'::date")).toEqual({ error: `date/time field value out of range: ${WITHHELD}`, code: '22008' });
      // Unquoted after a colon: make_date over masked columns in a rules file's `sql:`.
      expect(await failureOf('SELECT make_date(1987, 2, 30)')).toEqual({ error: `date field value out of range: ${WITHHELD}`, code: '22008' });
      expect(await failureOf('SELECT make_time(24, 61, 0)')).toEqual({ error: `time field value out of range: ${WITHHELD}`, code: '22008' });
      // A value with a quote of its own.
      expect(await failureOf('SELECT \'4111"cd\'::int')).toEqual({ error: `invalid input syntax for type integer: ${WITHHELD}`, code: '22P02' });
      // Encoding errors give the bytes, unquoted; the encodings' names (no data) stay.
      expect(await failureOf("SELECT convert_from('\\x41e974'::bytea, 'UTF8')")).toEqual({ error: `invalid byte sequence for encoding UTF8: ${WITHHELD}`, code: '22021' });
      expect(await failureOf("SELECT convert('\\xe282ac'::bytea, 'UTF8', 'LATIN1')")).toEqual({
        error: `character with byte sequence ${WITHHELD} in encoding UTF8 has no equivalent in encoding LATIN1`,
        code: '22P05',
      });
      // Input functions that report a row's value as a syntax error (42601) or an internal one (XX000).
      await client.query("CREATE TEMP TABLE secrets (v text); INSERT INTO secrets VALUES ('alice smith')");
      expect(await failureOf('SELECT v::tsquery FROM secrets')).toEqual({ error: `syntax error in tsquery: ${WITHHELD}`, code: '42601' });
      expect(await failureOf("SELECT (v || ':')::tsvector FROM secrets")).toEqual({ error: `syntax error in tsvector: ${WITHHELD}`, code: '42601' });
      expect(await failureOf("SELECT ('$ ' || v)::jsonpath FROM secrets")).toEqual({ error: `syntax error at or near ${WITHHELD} of jsonpath input`, code: '42601' });
      // A syntax error in the statement's own text (a rules file's `sql:`) names where it is.
      expect(await failureOf('SELECT v AS alice smith FROM secrets')).toEqual({ error: 'syntax error at or near "smith"', code: '42601' });
    } finally {
      await client.end();
    }
  });

  it('names the table, line and column of a COPY error (an environment column narrower than production), never the value', async () => {
    const client = new Client({ connectionString: ADMIN_URL });
    await client.connect();
    try {
      await client.query('CREATE TEMP TABLE "Narrow codes" (id int, "Sku code" varchar(3))');
      const copyOf = async (csv: string) => {
        const error = await pipeline(Readable.from([csv]), client.query(copyFrom('COPY "Narrow codes" FROM STDIN (FORMAT csv)'))).then(() => undefined, (e: unknown) => e);
        expect(error).toBeInstanceOf(Error);
        return describeFailure(error, { detail: false });
      };
      const tooLong = await copyOf('1,ABC\n2,SECRET-4111\n');
      expect(tooLong).toEqual({ error: 'value too long for type character varying(3) (COPY Narrow codes, line 2, column Sku code)', code: '22001' });
      const badInt = await copyOf('4111x,ABC\n');
      expect(badInt).toEqual({ error: `invalid input syntax for type integer: ${WITHHELD} (COPY Narrow codes, line 1, column id)`, code: '22P02' });
      const extra = await copyOf('1,ABC,SECRET-4111\n');
      expect(extra.error).toBe('extra data after last expected column (COPY Narrow codes, line 1)');
    } finally {
      await client.end();
    }
  });

  it('appends the location our own code gave an error (names with quotes of their own), after the value was withheld', () => {
    const located = () => locateFailure(pgError('invalid input syntax for type integer: "4111 "x""', '22P02'), 'table "Sales"."Order Items", column "qty, total"');
    expect(describeFailure(located(), { detail: false })).toEqual({
      error: `invalid input syntax for type integer: ${WITHHELD} (table "Sales"."Order Items", column "qty, total")`,
      code: '22P02',
    });
    expect(describeFailure(located(), { detail: true }).error).toBe('invalid input syntax for type integer: "4111 "x"" (table "Sales"."Order Items", column "qty, total")');
    // The error is left as it was: its message, its code, its own properties.
    expect(located()).toMatchObject({ message: 'invalid input syntax for type integer: "4111 "x""', code: '22P02' });
    expect(Object.keys(located()).sort()).toEqual(['code', 'detail']);
  });

  it('withholds the whole message the database\'s own code raised (RAISE, whatever its SQLSTATE), naming the routine', async () => {
    const client = new Client({ connectionString: ADMIN_URL });
    await client.connect();
    try {
      await client.query('BEGIN');
      await client.query(`CREATE FUNCTION pg_temp.check_email(email text) RETURNS void LANGUAGE plpgsql AS $$
        BEGIN
          IF email LIKE '%@example.com' THEN RAISE EXCEPTION 'customer has a non-QA email address %', email; END IF;
          RAISE EXCEPTION 'address % refused', email USING ERRCODE = 'check_violation';
        END $$`);
      const failureOf = async (sql: string, detail = false) => {
        await client.query('SAVEPOINT s');
        const error = await client.query(sql).then(() => undefined, (e: unknown) => e);
        await client.query('ROLLBACK TO SAVEPOINT s');
        return describeFailure(error, { detail });
      };
      const withheld = "the database's own code raised an error (message withheld, as it may quote row values; ERROR_DETAIL=true shows it): PL/pgSQL function pg_temp";
      const raised = await failureOf("SELECT pg_temp.check_email('ada@example.com')");
      expect(raised.code).toBe('P0001');
      expect(raised.error).toMatch(new RegExp(`^${withheld.replace(/[().]/g, '\\$&')}.*check_email\\(text\\) line 3 at RAISE$`));
      const asCheck = await failureOf("SELECT pg_temp.check_email('grace@corp.example')");
      expect(asCheck.code).toBe('23514');
      expect(asCheck.error).not.toContain('grace');
      expect(asCheck.error).toContain('line 4 at RAISE');
      expect((await failureOf("SELECT pg_temp.check_email('ada@example.com')", true)).error).toBe('customer has a non-QA email address ada@example.com');
    } finally {
      await client.end();
    }
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
