import { BaseRpcContext } from '@nestjs/microservices';
import type { JsMsg } from '@nats-io/jetstream';

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
   * The failure to report when the app stops during the last delivery: handed back, the message
   * would be dropped by the broker without anyone saying so. `what` is the work, e.g. `load of X`.
   */
  stoppedOnLastDelivery(what: string): StoppedOnLastDeliveryError {
    return new StoppedOnLastDeliveryError(
      `the ${what} was interrupted: the app stopped during delivery ${this.getDeliveryCount()}, the last the consumer allows (max_deliver ${this.args[3]}), so it will not be delivered again`,
    );
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
