import { errorMessage } from './redact';

/** What a failure event carries: a message safe to publish and, where known, a code to act on. */
export interface Failure {
  error: string;
  /** PostgreSQL's SQLSTATE, or a short code of ours (an error's own `code` string). */
  code?: string;
}

interface DatabaseErrorLike {
  message: string;
  code?: unknown;
  detail?: unknown;
  /** PostgreSQL's CONTEXT: `PL/pgSQL function check_email() line 3 at RAISE`. */
  where?: unknown;
  /** Where in the statement's text the error is: set for the statement's own syntax, not for a row's value. */
  position?: unknown;
}

// Messages the database's own code writes (RAISE in a trigger, a CHECK's or a domain's function, a
// masking `sql:` expression) are free text and often quote the row. RAISE can give any SQLSTATE
// (USING ERRCODE), so its CONTEXT counts too, besides the classes of raised and routine errors.
const ROUTINE_CLASSES = /^(P0|38|39|2F)/;
const RAISED = / at RAISE$/m;

// Data exceptions (class 22) quote the offending input in the message itself, at the end or in the
// middle: `invalid input syntax for type integer: "4111 1111"`, `value "41111" is out of range for
// type smallint`, `"1e400" is out of range for type double precision`. The value may hold quotes of
// its own (`"ab"cd"`), so everything from the first quote to the last goes.
const QUOTED_VALUE = /"[\s\S]*"/;
// Encoding errors give the offending bytes unquoted, and quote the encodings' names (no data, so
// they are kept, unquoted): `invalid byte sequence for encoding "UTF8": 0xe9 0x74`.
const BYTE_SEQUENCE = /0x[0-9a-f]{2}(?: 0x[0-9a-f]{2})*/gi;
const ENCODING_NAME = /encoding "([A-Z0-9_]+)"/g;
const WITHHELD = '(value withheld; ERROR_DETAIL=true shows it)';
// Some give the value unquoted after a colon: `date field value out of range: 1987-02-30` (make_date
// over masked columns in a rules file's `sql:`), `time field value out of range: 24:61:00`. What
// follows a data exception's first ": " goes too, unless it was withheld already.
const AFTER_COLON = /: (?!\(value withheld)[\s\S]*$/;

// Input functions outside class 22 quote the value too: the text-search types and jsonpath report it
// as a syntax error (42601, `syntax error in tsquery: "alice smith"`), extensions as an internal
// one (XX000, hstore's `Syntax error near "c" at position 5`). Read from a row, such an error has no
// position in the statement; a syntax error in a statement's own text (a rules file's `sql:`) has
// one, and quotes that text, which stays.
const INPUT_SYNTAX_CODES = new Set(['42601', 'XX000']);

/** Whether a database error's message may quote a value read from a row (by its SQLSTATE and position). */
export function quotesRowValue(error: unknown): boolean {
  const code = codeOf(error);
  if (!code) return false;
  const position = (error as DatabaseErrorLike).position;
  return code.startsWith('22') || (INPUT_SYNTAX_CODES.has(code) && (position === undefined || position === null || position === ''));
}

function withholdValues(message: string): string {
  return message.replace(ENCODING_NAME, 'encoding $1').replace(BYTE_SEQUENCE, WITHHELD).replace(QUOTED_VALUE, WITHHELD).replace(AFTER_COLON, `: ${WITHHELD}`);
}

/**
 * Describes an error for events, alerts and the status page. PostgreSQL's DETAIL (and the value a
 * data exception quotes) can hold row values, i.e. production data: they are left out unless
 * `detail` (ERROR_DETAIL=true) asks for them. Secrets are masked either way.
 */
export function describeFailure(error: unknown, options: { detail: boolean }): Failure {
  const code = codeOf(error);
  if (!(error instanceof Error)) return { error: errorMessage(error), ...(code ? { code } : {}) };
  const dbError = error as Error & DatabaseErrorLike;
  let message = dbError.message;
  if (!options.detail && quotesRowValue(error)) message = withholdValues(message);
  const where = typeof dbError.where === 'string' ? dbError.where : '';
  if (!options.detail && ((code && ROUTINE_CLASSES.test(code)) || RAISED.test(where))) {
    // Which routine raised it: the CONTEXT's innermost line names functions, never values.
    const routine = /^PL\/pgSQL function [^\n]*/.exec(where)?.[0];
    message = `the database's own code raised an error (message withheld, as it may quote row values; ERROR_DETAIL=true shows it)${routine ? `: ${routine}` : ''}`;
  }
  if (options.detail && typeof dbError.detail === 'string' && dbError.detail) message = `${message} (DETAIL: ${dbError.detail})`;
  const location = copyLocationOf(where) ?? ownLocationOf(error);
  if (location) message = `${message} (${location})`;
  return { error: errorMessage(message), ...(code ? { code } : {}) };
}

// COPY FROM's CONTEXT names the table, the line and the column, then quotes the value:
// `COPY products, line 3, column sku: "ABCDE"`. Without it an error such as `value too long for
// type character varying(3)` names nothing to fix; the value itself stays out.
const COPY_CONTEXT = /^COPY (.+?), line (\d+)(?:, column (.+?))?(?:: [\s\S]*)?$/m;

/** `COPY products, line 3, column sku` of a COPY error's CONTEXT, without the value. */
function copyLocationOf(where: string): string | undefined {
  const match = COPY_CONTEXT.exec(where);
  if (!match) return undefined;
  const [, table, line, column] = match;
  return `COPY ${table}, line ${line}${column ? `, column ${column}` : ''}`;
}

const LOCATION = Symbol('db-fanout failure location');

/**
 * Marks an error with where it happened, in our own words (`table public.people, column name`),
 * for a statement whose errors PostgreSQL gives no location to, as a COPY's CONTEXT does (an
 * `INSERT ... SELECT` whose cast fails names no table or column). Described, it is appended as a
 * COPY's location is, after the values were withheld: it must hold names only, never a value.
 * The error itself (its class, SQLSTATE, message, DETAIL) is left as it is.
 */
export function locateFailure<E>(error: E, location: string): E {
  if (typeof error === 'object' && error !== null) Object.defineProperty(error, LOCATION, { value: location, configurable: true });
  return error;
}

function ownLocationOf(error: Error): string | undefined {
  const location = (error as Error & { [LOCATION]?: unknown })[LOCATION];
  return typeof location === 'string' && location ? location : undefined;
}

function codeOf(error: unknown): string | undefined {
  const code = typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined;
  return typeof code === 'string' && /^[A-Za-z0-9-]{1,40}$/.test(code) ? code : undefined;
}
