import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Errors worth retrying: the database or network went away, or the server asked us to try again.
 * Anything else (a missing column, a constraint violation, a bad checksum) fails the same way
 * every time, so retrying it only delays the failure report.
 */
const TRANSIENT_SQLSTATE_CLASSES = ['08', '53', '58'];
const TRANSIENT_SQLSTATES = new Set(['40001', '40P01', '55P03', '57P01', '57P02', '57P03']);
const TRANSIENT_NODE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ENOTFOUND']);
const TRANSIENT_MESSAGES = [/Connection terminated/i, /connection timeout/i, /Client has encountered a connection error/i];
/**
 * nats.js errors of a broker that is failing over: a request that timed out, or that nobody answered
 * while a JetStream stream elects a new leader after a cluster node died.
 */
const TRANSIENT_ERROR_NAMES = new Set(['TimeoutError', 'NoResponders']);
/**
 * JetStream API errors (nats.js `JetStreamApiError`, `code` = the server's err_code) of a cluster
 * that is failing over: 10008, "JetStream system temporarily unavailable", is what a publish or
 * request gets while the stream it names has no leader yet. Other API errors (no such stream, bad
 * configuration) are not: they fail the same way every time.
 */
const TRANSIENT_JETSTREAM_CODES = new Set([10008]);

/**
 * S3 (AWS SDK) errors once the SDK's own 3 tries are spent: the service's fault (5xx: InternalError,
 * ServiceUnavailable, SlowDown) or throttling (429) is an outage to wait out. A client fault
 * (NoSuchBucket, AccessDenied, a bad request) fails the same way every time. The codes are for our
 * own errors that carry one without the SDK's fields (a DeleteObjects key refused with SlowDown).
 */
const TRANSIENT_S3_CODES = new Set(['InternalError', 'ServiceUnavailable', 'SlowDown', 'Throttling', 'ThrottlingException', 'RequestTimeout']);

/**
 * 501 NotImplemented and 505 are server faults that come back the same every time: an
 * S3-compatible store without a feature the request uses (a checksum or a streaming trailer).
 */
const PERMANENT_S3_STATUSES = new Set([501, 505]);

function isTransientSdkError(error: object): boolean {
  const { $fault, $metadata, $retryable, name } = error as { $fault?: unknown; $metadata?: { httpStatusCode?: unknown }; $retryable?: { throttling?: unknown }; name?: unknown };
  if ($fault === undefined) return false;
  const status = $metadata?.httpStatusCode;
  if (name === 'NotImplemented' || (typeof status === 'number' && PERMANENT_S3_STATUSES.has(status))) return false;
  return $fault === 'server' || status === 429 || (typeof status === 'number' && status >= 500) || $retryable?.throttling === true;
}

export function isTransientError(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return false;
  const { code, message } = error as { code?: unknown; message?: unknown };
  if (isTransientSdkError(error)) return true;
  if (typeof code === 'string') {
    if (TRANSIENT_SQLSTATES.has(code) || TRANSIENT_NODE_CODES.has(code) || TRANSIENT_S3_CODES.has(code)) return true;
    // A few classes are transient as a whole; check them only for real 5-character SQLSTATEs.
    if (/^[0-9A-Z]{5}$/.test(code) && TRANSIENT_SQLSTATE_CLASSES.some((prefix) => code.startsWith(prefix))) return true;
  }
  if (error instanceof Error && TRANSIENT_ERROR_NAMES.has(error.name)) return true;
  if (error instanceof Error && error.name === 'JetStreamApiError' && typeof code === 'number' && TRANSIENT_JETSTREAM_CODES.has(code)) return true;
  if (error instanceof AggregateError) return error.errors.some(isTransientError);
  if (typeof message === 'string' && TRANSIENT_MESSAGES.some((pattern) => pattern.test(message))) return true;
  // nats.js v3 wraps what went wrong: a request nobody answered is a RequestError whose cause is the
  // NoRespondersError, and a JetStream call gets JetStreamNotEnabled around that.
  return error instanceof Error && error.cause !== undefined && error.cause !== error && isTransientError(error.cause);
}

export interface RetryPolicy {
  retries: number;
  delayMs: number;
  /** `fixed` (Airflow's default): every wait is delayMs. `exponential`: delayMs, 2x, 4x... up to maxDelayMs. */
  backoff?: 'fixed' | 'exponential';
  maxDelayMs?: number;
}

/** The wait after failed attempt number `attempt` (1-based). */
export function retryDelay(policy: RetryPolicy, attempt: number): number {
  if (policy.backoff !== 'exponential') return policy.delayMs;
  const delay = policy.delayMs * 2 ** (attempt - 1);
  return Math.min(delay, policy.maxDelayMs ?? Number.POSITIVE_INFINITY);
}

export class RetriesExhaustedError extends Error {
  constructor(
    readonly attempts: number,
    readonly lastError: unknown,
  ) {
    super(lastError instanceof Error ? lastError.message : String(lastError), { cause: lastError });
    this.name = 'RetriesExhaustedError';
  }
}

/**
 * Runs `work` up to 1 + retries times, RETRY_DELAY apart (or backing off), retrying only transient errors
 * (like the old DAG's retries=2, retry_delay=5m). Resolves with the result and the attempt count;
 * rejects with RetriesExhaustedError carrying the attempt count and the last error.
 */
export async function withRetry<T>(
  policy: RetryPolicy,
  work: (attempt: number) => Promise<T>,
  onRetry: (attempt: number, error: unknown, delayMs: number) => void = () => undefined,
  signal?: AbortSignal,
): Promise<{ result: T; attempts: number }> {
  for (let attempt = 1; ; attempt++) {
    try {
      return { result: await work(attempt), attempts: attempt };
    } catch (error) {
      const canRetry = attempt <= policy.retries && isTransientError(error) && !signal?.aborted;
      if (!canRetry) throw new RetriesExhaustedError(attempt, error);
      const delayMs = retryDelay(policy, attempt);
      onRetry(attempt, error, delayMs);
      try {
        await sleep(delayMs, undefined, { signal });
      } catch {
        throw new RetriesExhaustedError(attempt, error);
      }
    }
  }
}
