import { jetstreamManager } from '@nats-io/jetstream';
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
