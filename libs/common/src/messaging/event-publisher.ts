import { Inject, Injectable, Logger } from '@nestjs/common';
import { setTimeout as sleep } from 'node:timers/promises';
import { JetStreamApiCodes, JetStreamApiError, jetstream, type JetStreamClient } from '@nats-io/jetstream';
import { headers as natsHeaders, type NatsConnection } from '@nats-io/transport-node';
import type { NatsConfig } from '../config/app-config';
import type { Subject } from '../contract/subjects';
import { errorMessage } from '../observability/redact';
import { retryDelay, type RetryPolicy } from '../resilience/retry';
import { NATS_CONFIG, NATS_CONNECTION } from './jetstream.constants';

/** 1 + 6 retries waiting 1, 2, 4, 8, 15, 15 s: about 45 s of broker trouble (a restart, a cluster electing leaders). */
const BROKER_RETRY: RetryPolicy = { retries: 6, delayMs: 1_000, backoff: 'exponential', maxDelayMs: 15_000 };

/**
 * Runs a JetStream call again through about 45 s of broker trouble (BROKER_RETRY): every failure
 * is retried unless the connection is closed or `retryable` says no. `onRetry` hears of each retry
 * (`what failed (attempt n of m), retrying: why`).
 */
export async function withBrokerRetry<T>(
  connection: NatsConnection,
  what: string,
  work: () => Promise<T>,
  onRetry: (line: string) => void,
  retryable: (error: unknown) => boolean = () => true,
): Promise<T> {
  const attempts = BROKER_RETRY.retries + 1;
  for (let attempt = 1; ; attempt++) {
    try {
      return await work();
    } catch (error) {
      if (!retryable(error) || attempt >= attempts || connection.isClosed()) throw error;
      onRetry(`${what} failed (attempt ${attempt} of ${attempts}), retrying: ${errorMessage(error)}`);
      await sleep(retryDelay(BROKER_RETRY, attempt));
    }
  }
}

/**
 * Publishes pipeline events into the stream and waits for the broker's ack, so a publish that
 * returns has been stored. A message id lets the server drop duplicates of a retried publish.
 */
@Injectable()
export class EventPublisher {
  private readonly js: JetStreamClient;

  private readonly logger = new Logger('Events');

  constructor(
    @Inject(NATS_CONNECTION) private readonly connection: NatsConnection,
    @Inject(NATS_CONFIG) private readonly config: NatsConfig,
  ) {
    this.js = jetstream(connection);
  }

  /**
   * Retries for about a minute (a broker restart, a leader election) before giving up. With a
   * message id a retried publish that did reach the stream is dropped as a duplicate. `headers`
   * travel beside the body (e.g. TRIGGER_SEQ_HEADER). With `expectLastSubjectSequence` the stream
   * stores the message only if the subject's last message is still that one (0: none); otherwise
   * the publish throws at once, without retrying (see isOutrunPublish).
   */
  async publish(subject: Subject, payload: object, msgID?: string, headers?: Record<string, string>, expectLastSubjectSequence?: number): Promise<void> {
    const body = JSON.stringify(payload);
    let hdrs: ReturnType<typeof natsHeaders> | undefined;
    if (headers) {
      hdrs = natsHeaders();
      for (const [name, value] of Object.entries(headers)) hdrs.set(name, value);
    }
    const options = {
      ...(msgID ? { msgID } : {}),
      ...(hdrs ? { headers: hdrs } : {}),
      ...(expectLastSubjectSequence === undefined ? {} : { expect: { lastSubjectSequence: expectLastSubjectSequence } }),
    };
    await withBrokerRetry(
      this.connection,
      `publishing ${subject}`,
      () => this.js.publish(`${this.config.subjectPrefix}${subject}`, body, options),
      (line) => this.logger.warn(line),
      (error) => !isOutrunPublish(error),
    );
  }
}

/**
 * The stream refused a publish because another message reached its subject first
 * (expectLastSubjectSequence): 10071 on nats-server 2.9; newer servers answer 10164 while another
 * publish to the subject is still in flight.
 */
export function isOutrunPublish(error: unknown): boolean {
  return (
    error instanceof JetStreamApiError &&
    (error.code === JetStreamApiCodes.StreamWrongLastSequence || error.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}
