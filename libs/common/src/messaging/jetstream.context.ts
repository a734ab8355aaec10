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

  /** 1 for the first delivery, more when the broker redelivers (crash, nak, lost ack). */
  getDeliveryCount(): number {
    return this.args[0].info.deliveryCount;
  }
}
