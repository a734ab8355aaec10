import type { JsMsg } from '@nats-io/jetstream';
import { describeFailure } from '../observability/failure';
import { RetriesExhaustedError } from '../resilience/retry';
import { JetStreamContext, StoppedOnLastDeliveryError } from './jetstream.context';

/** The context of a message's 10th delivery under max_deliver 10, the app stopping or not. */
function lastDelivery(stopping: boolean): JetStreamContext {
  const stop = new AbortController();
  if (stopping) stop.abort();
  const message = { info: { deliveryCount: 10 } } as unknown as JsMsg;
  return new JetStreamContext([message, 'snapshot.ready', stop.signal, 10]);
}

describe('JetStreamContext.lastDeliveryFailure', () => {
  const aborted = Object.assign(new Error('This operation was aborted'), { name: 'AbortError' });
  const lockWait = Object.assign(new Error('canceling statement due to lock timeout'), { code: '55P03' });
  const duplicate = Object.assign(new Error('duplicate key value violates unique constraint "customers_pkey"'), { code: '23505' });

  it('says the work was interrupted when the stop cut it short (a wait, a retry the stop cancelled)', () => {
    for (const error of [aborted, lockWait, new RetriesExhaustedError(1, lockWait)]) {
      const { error: failure, attempts } = lastDelivery(true).lastDeliveryFailure(error, 'load of 20240105-aaaaaaaa');
      expect(attempts).toBe(1);
      expect(failure).toBeInstanceOf(StoppedOnLastDeliveryError);
      expect(failure).toMatchObject({
        code: 'stopped-on-last-delivery',
        message: 'the load of 20240105-aaaaaaaa was interrupted: the app stopped during delivery 10, the last the consumer allows (max_deliver 10), so it will not be delivered again',
      });
    }
  });

  it('keeps an error of the work itself, stopping or not, and any error when not stopping: the cause, not its wrapper', () => {
    expect(lastDelivery(true).lastDeliveryFailure(duplicate, 'load of x')).toEqual({ error: duplicate, attempts: 1 });
    // Unwrapped, so its SQLSTATE (and what describeFailure withholds for it) reaches the failure event.
    expect(lastDelivery(true).lastDeliveryFailure(new RetriesExhaustedError(3, duplicate), 'load of x')).toEqual({ error: duplicate, attempts: 3 });
    expect(lastDelivery(false).lastDeliveryFailure(lockWait, 'load of x')).toEqual({ error: lockWait, attempts: 1 });
  });

  it('lets describeFailure withhold the row value of a data error wrapped by the retries', () => {
    const dataError = Object.assign(new Error('invalid input syntax for type integer: "4111-1111-1111-1111"'), { code: '22P02' });
    const { error } = lastDelivery(true).lastDeliveryFailure(new RetriesExhaustedError(1, dataError), 'load of x');
    expect(describeFailure(error, { detail: false })).toEqual({ error: 'invalid input syntax for type integer: (value withheld; ERROR_DETAIL=true shows it)', code: '22P02' });
  });
});
