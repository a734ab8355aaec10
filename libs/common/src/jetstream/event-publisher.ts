import { Inject, Injectable } from '@nestjs/common';
import { jetstream, type JetStreamClient } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { NatsConfig } from '../config/app-config';
import type { Subject } from '../contract/subjects';
import { NATS_CONFIG, NATS_CONNECTION } from './jetstream.constants';

/**
 * Publishes pipeline events into the stream and waits for the broker's ack, so a publish that
 * returns has been stored. A message id lets the server drop duplicates of a retried publish.
 */
@Injectable()
export class EventPublisher {
  private readonly js: JetStreamClient;

  constructor(
    @Inject(NATS_CONNECTION) connection: NatsConnection,
    @Inject(NATS_CONFIG) private readonly config: NatsConfig,
  ) {
    this.js = jetstream(connection);
  }

  async publish(subject: Subject, payload: object, msgID?: string): Promise<void> {
    await this.js.publish(`${this.config.subjectPrefix}${subject}`, JSON.stringify(payload), msgID ? { msgID } : undefined);
  }
}
