import { Catch, type RpcExceptionFilter } from '@nestjs/common';
import { type Observable, throwError } from 'rxjs';
import { InvalidMessageError } from '../contract/invalid-message.error';
import { type TerminateDisposition, TerminateMessage } from './message-disposition';

/**
 * Hands "this message can never succeed" to the transport, which terminates it: a TerminateMessage
 * as it is, and an InvalidMessageError thrown anywhere in a handler. Without it Nest logs each one
 * as an unhandled error and the transport would redeliver a bad message.
 */
@Catch(TerminateMessage, InvalidMessageError)
export class TerminateMessageFilter implements RpcExceptionFilter<TerminateMessage | InvalidMessageError> {
  catch(exception: TerminateMessage | InvalidMessageError): Observable<never> {
    const disposition: TerminateDisposition =
      exception instanceof TerminateMessage ? (exception.getError() as TerminateDisposition) : { disposition: 'terminate', reason: exception.message };
    return throwError(() => disposition);
  }
}
