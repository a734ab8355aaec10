import { type ArgumentsHost, Catch } from '@nestjs/common';
import { BaseExceptionFilter } from '@nestjs/core';
import { type Observable, throwError } from 'rxjs';
import { InvalidMessageError } from '../contract/invalid-message.error';
import { describeFailure } from '../observability/failure';
import { RetriesExhaustedError } from '../resilience/retry';
import { type RedeliverDisposition, type TerminateDisposition, TerminateMessage } from './message-disposition';

/**
 * Every error a handler throws, turned into what the transport does with the message. "This message
 * can never succeed" (a TerminateMessage as it is, an InvalidMessageError thrown anywhere in a
 * handler) terminates it. Anything else hands it back for redelivery, described as failure events
 * describe errors, values withheld: Nest's own filter logged the error whole, and a COPY error
 * quotes the row value it choked on (a load stopped by SIGTERM rethrows its error for redelivery).
 */
@Catch()
export class TerminateMessageFilter extends BaseExceptionFilter {
  /** HTTP routes keep Nest's own handling (BaseExceptionFilter, given the app's HTTP adapter). */
  override catch(exception: unknown, host: ArgumentsHost): Observable<never> | void {
    if (host.getType() !== 'rpc') return super.catch(exception, host);
    if (exception instanceof TerminateMessage) return throwError(() => exception.getError() as TerminateDisposition);
    if (exception instanceof InvalidMessageError) return throwError(() => ({ disposition: 'terminate', reason: exception.message }) satisfies TerminateDisposition);
    const cause = exception instanceof RetriesExhaustedError ? exception.lastError : exception;
    return throwError(() => ({ disposition: 'redeliver', reason: describeFailure(cause, { detail: false }).error }) satisfies RedeliverDisposition);
  }
}
