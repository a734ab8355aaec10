import { BaseRpcContext } from '@nestjs/microservices';
import type { JsMsg } from '@nats-io/jetstream';
import { isTransientError, RetriesExhaustedError } from '../resilience/retry';

/** What a handler can ask about the message it is processing (second @EventPattern handler argument). */
export class JetStreamContext extends BaseRpcContext<[JsMsg, string, AbortSignal, number]> {
  getMessage(): JsMsg {
    return this.args[0];
  }

  /** The logical subject (without the configured prefix). */
  getSubject(): string {
    return this.args[1];
  }

  /** Aborted when the app shuts down: long waits (retry delays) should stop and let the message be redelivered. */
  getShutdownSignal(): AbortSignal {
    return this.args[2];
  }

  /**
   * True when the broker will not deliver this message again (the consumer's max_deliver, as the
   * broker holds it, is reached): a handler that fails now should report the failure itself, or
   * nobody will. Never true for a consumer without a limit.
   */
  isLastDelivery(): boolean {
    const maxDeliver = this.args[3];
    return maxDeliver > 0 && this.args[0].info.deliveryCount >= maxDeliver;
  }

  /**
   * What to report (and the delivery's attempts) when the work of the last delivery ends in `error`: nobody else will, as the
   * broker drops the message after it. If the app is stopping and `error` is the stop's own doing
   * (a wait cut short, a transient error whose retry the stop cancelled), a StoppedOnLastDeliveryError
   * saying so; any other error (the work failed for a reason of its own) as it is. `what` names the
   * work, e.g. `load of X`.
   */
  lastDeliveryFailure(error: unknown, what: string): { error: unknown; attempts: number } {
    // The cause itself, never its wrapper: its SQLSTATE and CONTEXT decide what a failure event may say.
    const [cause, attempts] = error instanceof RetriesExhaustedError ? [error.lastError, error.attempts] : [error, 1];
    const interrupted = (cause as { name?: unknown } | null)?.name === 'AbortError' || isTransientError(cause);
    if (!this.getShutdownSignal().aborted || !interrupted) return { error: cause, attempts };
    return {
      error: new StoppedOnLastDeliveryError(
        `the ${what} was interrupted: the app stopped during delivery ${this.getDeliveryCount()}, the last the consumer allows (max_deliver ${this.args[3]}), so it will not be delivered again`,
      ),
      attempts,
    };
  }

  /** 1 for the first delivery, more when the broker redelivers (crash, nak, lost ack). */
  getDeliveryCount(): number {
    return this.args[0].info.deliveryCount;
  }
}

/** The app stopped during a message's last delivery: its failure is reported instead of it being lost. */
export class StoppedOnLastDeliveryError extends Error {
  override readonly name = 'StoppedOnLastDeliveryError';
  readonly code = 'stopped-on-last-delivery';
}
