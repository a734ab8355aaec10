import { BaseRpcContext } from '@nestjs/microservices';
import type { JsMsg } from '@nats-io/jetstream';

/** What a handler can ask about the message it is processing (second @EventPattern handler argument). */
export class JetStreamContext extends BaseRpcContext<[JsMsg, string, AbortSignal]> {
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

  /** 1 for the first delivery, more when the broker redelivers (crash, nak, lost ack). */
  getDeliveryCount(): number {
    return this.args[0].info.deliveryCount;
  }
}
