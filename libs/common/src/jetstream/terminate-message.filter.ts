import { Catch, type RpcExceptionFilter } from '@nestjs/common';
import { type Observable, throwError } from 'rxjs';
import { TerminateMessage } from './message-disposition';

/**
 * Passes a TerminateMessage to the transport as it is. Without it Nest logs every one as an
 * unhandled error, and a rejected message would cost two log lines instead of one clear one.
 */
@Catch(TerminateMessage)
export class TerminateMessageFilter implements RpcExceptionFilter<TerminateMessage> {
  catch(exception: TerminateMessage): Observable<never> {
    return throwError(() => exception.getError());
  }
}
