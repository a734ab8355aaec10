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
}

// Data exceptions (class 22) quote the offending input in the message itself:
// `invalid input syntax for type integer: "4111 1111 1111 1111"`.
const QUOTED_VALUE_AT_END = /: ".*"$/s;

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
  if (!options.detail && code?.startsWith('22')) message = message.replace(QUOTED_VALUE_AT_END, ': (value withheld; ERROR_DETAIL=true shows it)');
  if (options.detail && typeof dbError.detail === 'string' && dbError.detail) message = `${message} (DETAIL: ${dbError.detail})`;
  return { error: errorMessage(message), ...(code ? { code } : {}) };
}

function codeOf(error: unknown): string | undefined {
  const code = typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined;
  return typeof code === 'string' && /^[A-Za-z0-9-]{1,40}$/.test(code) ? code : undefined;
}
