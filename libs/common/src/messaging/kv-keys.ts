import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';

/**
 * The keys of a KV bucket, read from its stream's subject counts. `kv.keys()` from @nats-io/kv 3.4
 * against nats-server 2.9 can hang for good when a key is written while it lists (seen here in
 * about one listing in three), which would freeze the status page and the CLI.
 */
export async function kvKeys(connection: NatsConnection, bucket: string): Promise<string[]> {
  const jsm = await jetstreamManager(connection);
  const prefix = `$KV.${bucket}.`;
  const info = await jsm.streams.info(`KV_${bucket}`, { subjects_filter: `${prefix}>` });
  return Object.keys(info.state.subjects ?? {}).map((subject) => subject.slice(prefix.length));
}
