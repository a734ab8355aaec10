import { randomBytes } from 'node:crypto';
import { connect as connectSocket } from 'node:net';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import type { NatsConfig } from '@app/common/config';

export const NATS_URL = process.env.TEST_NATS_URL ?? 'nats://127.0.0.1:4222';

/**
 * The NatsConfig of a spec's own stream and subject prefix (`SPEC_<LABEL>_<id>`, `spec_<label>_<id>.`),
 * for specs that drive the messaging code directly rather than through an app's environment.
 */
export function specNatsConfig(label: string, ackWaitMs = 1_000): NatsConfig {
  const id = `${label}_${randomBytes(4).toString('hex')}`;
  return { servers: [NATS_URL], stream: `SPEC_${id}`.toUpperCase(), subjectPrefix: `spec_${id}.`, ackWaitMs, streamMaxAgeMs: 3_600_000, streamReplicas: 1 };
}

/** The KV buckets the apps make beside a stream (`<NATS_STREAM>_RUNS`, `<NATS_STREAM>_SNAPSHOTS`). */
export function pipelineBuckets(stream: string): string[] {
  return [`${stream}_RUNS`, `${stream}_SNAPSHOTS`];
}

/** A stream and subject prefix of this test's own, so test files never share broker state. */
export interface NatsNamespace {
  url: string;
  stream: string;
  prefix: string;
  env: Record<string, string>;
  cleanup(): Promise<void>;
}

export function natsNamespace(label: string, url: string = NATS_URL): NatsNamespace {
  const id = `${label}_${randomBytes(4).toString('hex')}`;
  const stream = `T_${id}`.toUpperCase();
  const prefix = `t_${id}.`;
  return {
    url,
    stream,
    prefix,
    env: { NATS_URL: url, NATS_STREAM: stream, NATS_SUBJECT_PREFIX: prefix },
    cleanup: async () => {
      const nc = await connect({ servers: url.split(',') });
      try {
        const jsm = await jetstreamManager(nc);
        await jsm.streams.delete(stream).catch(() => undefined);
        // The KV buckets the apps make beside the stream: the scheduler's run ledger, the dumper's
        // snapshot records. Left behind, every test run added them to the broker for good.
        for (const bucket of pipelineBuckets(stream)) await jsm.streams.delete(`KV_${bucket}`).catch(() => undefined);
      } finally {
        await nc.close();
      }
    },
  };
}

export interface CollectedEvent {
  subject: string;
  data: Record<string, unknown>;
}

/** Listens to every pipeline event of a namespace (core NATS: what a user's `nats sub` would see). */
export class EventCollector {
  readonly events: CollectedEvent[] = [];
  private constructor(
    private readonly nc: NatsConnection,
    private readonly sub: Subscription,
    private readonly prefix: string,
  ) {}

  static async start(namespace: NatsNamespace): Promise<EventCollector> {
    const nc = await connect({ servers: namespace.url.split(',') });
    const sub = nc.subscribe(`${namespace.prefix}>`);
    const collector = new EventCollector(nc, sub, namespace.prefix);
    void (async () => {
      for await (const msg of sub) {
        let data: Record<string, unknown> = {};
        try {
          data = msg.json();
        } catch {
          data = { raw: msg.string() };
        }
        collector.events.push({ subject: msg.subject.slice(namespace.prefix.length), data });
      }
    })();
    await nc.flush();
    return collector;
  }

  of(subject: string): Record<string, unknown>[] {
    return this.events.filter((e) => e.subject === subject).map((e) => e.data);
  }

  /** Waits (bounded) until `predicate` holds for the events seen so far. */
  async waitFor(description: string, predicate: (c: EventCollector) => boolean, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate(this)) {
      if (Date.now() > deadline) {
        throw new Error(`timed out after ${timeoutMs}ms waiting for ${description}; events: ${JSON.stringify(this.events, null, 1)}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** Idempotent: a test may stop listening before the harness's cleanup does. */
  async stop(): Promise<void> {
    if (this.nc.isClosed()) return;
    this.sub.unsubscribe();
    await this.nc.close();
  }
}

/**
 * Publishes like a user's plain NATS client would (`nats pub`), speaking the wire protocol over a
 * socket: no JetStream library, optionally with a Nats-Msg-Id header.
 */
export async function plainPublish(subject: string, body: string, msgId?: string, natsUrl: string = NATS_URL): Promise<void> {
  // A cluster's URL list (`nats://a,nats://b`): the first server takes the publish.
  const url = new URL(natsUrl.split(',')[0]);
  const socket = connectSocket(Number(url.port || 4222), url.hostname);
  const payload = Buffer.from(body);
  const frames: Buffer[] = [Buffer.from('CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\n')];
  if (msgId) {
    const headers = Buffer.from(`NATS/1.0\r\nNats-Msg-Id: ${msgId}\r\n\r\n`);
    frames.push(Buffer.from(`HPUB ${subject} ${headers.length} ${headers.length + payload.length}\r\n`), headers, payload);
  } else {
    frames.push(Buffer.from(`PUB ${subject} ${payload.length}\r\n`), payload);
  }
  frames.push(Buffer.from('\r\nPING\r\n'));
  await new Promise<void>((resolve, reject) => {
    let received = '';
    const timer = setTimeout(() => reject(new Error(`no PONG from ${natsUrl}`)), 5_000);
    socket.on('error', reject);
    socket.on('data', (chunk) => {
      received += chunk.toString();
      if (received.includes('-ERR')) reject(new Error(received));
      if (received.includes('PONG')) {
        clearTimeout(timer);
        socket.end();
        resolve();
      }
    });
    socket.write(Buffer.concat(frames));
  });
}
