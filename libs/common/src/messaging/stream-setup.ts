import {
  AckPolicy,
  DeliverPolicy,
  JetStreamApiError,
  type JetStreamManager,
  RetentionPolicy,
  StorageType,
} from '@nats-io/jetstream';
import { millis, nanos } from '@nats-io/transport-node';
import type { NatsConfig } from '../config/app-config';
import { streamSubjects } from '../contract/subjects';

const NOT_FOUND_CODES = new Set([10059 /* stream not found */, 10014 /* consumer not found */]);

function isNotFound(error: unknown): boolean {
  return error instanceof JetStreamApiError && NOT_FOUND_CODES.has(error.code);
}

/**
 * Creates the pipeline's stream if it does not exist. An existing stream is left as it is:
 * an operator may have tuned it (replicas, limits) and an app must not undo that on restart.
 */
export async function ensureStream(jsm: JetStreamManager, config: NatsConfig): Promise<void> {
  try {
    await jsm.streams.info(config.stream);
    return;
  } catch (error) {
    if (!isNotFound(error)) throw error;
  }
  try {
    await jsm.streams.add({
      name: config.stream,
      subjects: streamSubjects(config.subjectPrefix),
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      max_age: nanos(config.streamMaxAgeMs),
      num_replicas: config.streamReplicas,
      // Two schedulers firing the same tick publish one Nats-Msg-Id; the server keeps one.
      duplicate_window: nanos(2 * 60_000),
    });
  } catch (error) {
    // Another app created it between our look-up and our add: that is fine.
    if (!(await jsm.streams.info(config.stream).catch(() => undefined))) throw error;
  }
}

export interface ConsumerBinding {
  /** The logical subject, as written in @EventPattern (no prefix). */
  pattern: string;
  /** The subject the consumer filters on, when narrower than the pattern (e.g. one environment's). */
  subject?: string;
  /** Durable consumer name: shared by replicas, one per role (dumper) or per environment (loader). */
  durable: string;
  /**
   * Where a brand-new consumer starts. `all`: nothing published before the first start is lost
   * (triggers). `last`: a new environment loads the latest snapshot instead of replaying history.
   * `new`: only what is published from now on (requests such as a reload).
   */
  startAt: 'all' | 'last' | 'new';
  /** Upper bound of deliveries for one message, so a message that crashes its handler cannot loop forever. */
  maxDeliver: number;
  /**
   * Messages handed out at once across all replicas (default 100). 1 makes the consumer strictly
   * ordered: replicas then share the work for failover, one message at a time.
   */
  maxAckPending?: number;
}

/**
 * Creates the durable consumer if missing; an existing one keeps its position (that is the point of
 * it). Returns the consumer's ack wait in ms as the broker has it: an existing consumer keeps the
 * ack wait it was created with, whatever ACK_WAIT says now, and heartbeats must follow the broker's.
 */
export async function ensureConsumer(jsm: JetStreamManager, config: NatsConfig, binding: ConsumerBinding): Promise<number> {
  const maxAckPending = binding.maxAckPending ?? 100;
  try {
    const info = await jsm.consumers.info(config.stream, binding.durable);
    if (info.config.max_ack_pending !== maxAckPending) {
      // An ordering guarantee is part of the code's contract, not a tuning knob: bring old consumers in line.
      await jsm.consumers.update(config.stream, binding.durable, { max_ack_pending: maxAckPending });
    }
    return millis(info.config.ack_wait ?? nanos(config.ackWaitMs));
  } catch (error) {
    if (!isNotFound(error)) throw error;
  }
  try {
    await jsm.consumers.add(config.stream, {
      durable_name: binding.durable,
      filter_subject: `${config.subjectPrefix}${binding.subject ?? binding.pattern}`,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: { all: DeliverPolicy.All, last: DeliverPolicy.Last, new: DeliverPolicy.New }[binding.startAt],
      ack_wait: nanos(config.ackWaitMs),
      max_deliver: binding.maxDeliver,
      max_ack_pending: maxAckPending,
    });
  } catch (error) {
    if (!(await jsm.consumers.info(config.stream, binding.durable).catch(() => undefined))) throw error;
  }
  const info = await jsm.consumers.info(config.stream, binding.durable);
  return millis(info.config.ack_wait ?? nanos(config.ackWaitMs));
}
