import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { NATS_URL } from './nats';

/** What the broker still holds for a consumer: nothing pending and nothing unacked means nothing loops. */
export async function consumerBacklog(stream: string, durable: string): Promise<{ pending: number; unacked: number; redelivered: number }> {
  const nc = await connect({ servers: NATS_URL });
  try {
    const info = await (await jetstreamManager(nc)).consumers.info(stream, durable);
    return { pending: info.num_pending, unacked: info.num_ack_pending, redelivered: info.num_redelivered };
  } finally {
    await nc.close();
  }
}

/**
 * Takes the pending message of `durable` nine times and hands it back: its next delivery is the
 * 10th, the last the consumers allow (max_deliver 10).
 */
export async function useUpDeliveries(namespace: { url: string; stream: string }, durable: string): Promise<void> {
  const nc = await connect({ servers: namespace.url });
  try {
    const consumer = await jetstream(nc).consumers.get(namespace.stream, durable);
    for (let delivery = 1; delivery <= 9; delivery++) {
      const message = await consumer.next({ expires: 5_000 });
      if (!message) throw new Error(`${durable}: delivery ${delivery} did not come`);
      if (message.info.deliveryCount !== delivery) throw new Error(`${durable}: delivery ${message.info.deliveryCount}, expected ${delivery}`);
      message.nak();
      // Sent before the next pull (and before closing): a nak still in the client's buffer is lost,
      // and the broker would wait out the ack wait instead.
      await nc.flush();
    }
  } finally {
    await nc.close();
  }
}
