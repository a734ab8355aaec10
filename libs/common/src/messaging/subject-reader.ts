import { Logger } from '@nestjs/common';
import { AckPolicy, type ConsumerConfig, DeliverPolicy, jetstreamManager, type JsMsg } from '@nats-io/jetstream';
import { nanos, type NatsConnection } from '@nats-io/transport-node';
import type { NatsConfig } from '../config/app-config';
import { ACK, PullConsumer } from './pull-consumer';

/** Where a read of one subject starts: the stream's start, a sequence, or the first message stored at or after a time. */
export interface SubjectRead {
  filterSubject: string;
  startSeq?: number;
  startTime?: Date;
}

function startPosition({ startSeq, startTime }: SubjectRead): Partial<ConsumerConfig> {
  if (startSeq !== undefined) return { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: startSeq };
  if (startTime !== undefined) return { deliver_policy: DeliverPolicy.StartTime, opt_start_time: startTime.toISOString() };
  return { deliver_policy: DeliverPolicy.All };
}

/**
 * Reads one subject of the stream through an ephemeral consumer until it has nothing pending (a
 * single filter works on nats-server 2.9); throws rather than return part of it: callers decide on
 * the strength of what was read (retention deletes, the scheduler publishes or not).
 */
export async function readSubject(connection: NatsConnection, nats: NatsConfig, read: SubjectRead, timeoutMs: number, onMessage: (message: JsMsg) => void): Promise<void> {
  const jsm = await jetstreamManager(connection);
  const info = await jsm.consumers.add(nats.stream, {
    filter_subject: read.filterSubject,
    ack_policy: AckPolicy.None,
    ...startPosition(read),
    inactive_threshold: nanos(30_000),
  });
  try {
    const reader = new PullConsumer({ connection, stream: nats.stream, name: info.name, logger: new Logger('SubjectReader'), expiresMs: 2_000 });
    await reader.readToEnd((message) => {
      onMessage(message);
      return Promise.resolve(ACK);
    }, timeoutMs);
  } finally {
    await jsm.consumers.delete(nats.stream, info.name).catch(() => undefined);
  }
}
