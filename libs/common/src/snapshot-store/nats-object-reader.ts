import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Consumer, DeliverPolicy, type ConsumerMessages, type JetStreamClient, type JsMsg } from '@nats-io/jetstream';
import type { ObjectInfo } from '@nats-io/obj';
import { isTransientError } from '../resilience/retry';

export interface ChunkReadTimings {
  /** A pull's lifetime; the server sends idle heartbeats every half of it. */
  pullExpiresMs: number;
  /** While the reader waits, no chunk for this long: the consumer is replaced by a new one after the last chunk read. */
  idleMs: number;
  /** No chunk at all for this long, through every replacement: the read fails with ETIMEDOUT (transient: the load is retried). */
  giveUpMs: number;
}

/**
 * A new stream leader takes about 7 s after `kill -9` on loopback, and a consumer create sent to a
 * dead node times out after 5 s (the JetStream request timeout): 8 s without a chunk while waiting
 * means the consumer is gone, never a slow server.
 */
export const CHUNK_READ_TIMINGS: ChunkReadTimings = { pullExpiresMs: 4_000, idleMs: 8_000, giveUpMs: 50_000 };
/** Chunks (128 KiB each) asked for at once: about 1 MiB in flight per object, whatever its size. */
const CHUNKS_IN_FLIGHT = 8;

/** A corrupt or incomplete object: the bytes read are not the ones the Object Store recorded. */
export class ObjectDigestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ObjectDigestError';
  }
}

/** The next message, or 'idle' when none came within `ms` (the wait is abandoned, not the iterator). */
async function nextWithin(iterator: AsyncIterator<JsMsg>, ms: number): Promise<IteratorResult<JsMsg> | 'idle'> {
  const idle = new AbortController();
  try {
    return await Promise.race([iterator.next(), sleep(ms, 'idle' as const, { signal: idle.signal })]);
  } finally {
    idle.abort();
  }
}

/** The stream, as its leader has it, holds no message on `subject` after sequence `lastSeq`. */
async function noChunkAfter(js: JetStreamClient, stream: string, subject: string, lastSeq: number): Promise<boolean> {
  const last = await (await js.jetstreamManager()).streams.getMessage(stream, { last_by_subj: subject });
  return !last || last.seq <= lastSeq;
}

/**
 * Reads one Object Store object's chunks through ordered pull consumers, checking the object's
 * SHA-256 and size at the end (a mismatch destroys the stream with ObjectDigestError, and so do
 * chunks no longer in the stream: found when a consumer is made, not waited for).
 *
 * Why not `ObjectStore.get()`: after `kill -9` of the node that held its consumer (ephemeral, one
 * replica), the nats.js consumer keeps asking that consumer for its state, every request times out,
 * and it never re-creates it: the download stalled for good (ordered pull consumers do the same).
 * Here the reader itself notices that no chunk came for `idleMs` while it was waiting (a COPY that
 * is slow to take chunks does not count) and starts a new consumer at the stream sequence after the
 * last chunk it read: the download resumes where it stopped, and no load starts over.
 */
export function readObjectChunks(
  js: JetStreamClient,
  stream: string,
  chunkSubject: string,
  /** `name` says which object (`prod_snapshot_<id>/<table's file>`) in errors. */
  info: Pick<ObjectInfo, 'name' | 'size' | 'digest'>,
  timings: ChunkReadTimings = CHUNK_READ_TIMINGS,
): Readable {
  if (info.size === 0) return Readable.from([]);
  const expected = Buffer.from(info.digest.replace(/^SHA-256=/i, ''), 'base64');
  let current: { consumer: Consumer; messages: ConsumerMessages } | undefined;
  // close() stops only the client's side: the server kept each read's ordered consumer for its
  // inactive threshold (5 minutes), one per table, header read and resume: thousands a day on a
  // busy bucket, counted against an account's consumer limit. Deleted as soon as it is done with.
  // (When a consumer vanished mid-read, nats.js may still be making a replacement of its own as
  // this one is given up; that one is left to the threshold.)
  const close = () => {
    const done = current;
    current = undefined;
    if (!done) return;
    // Not after close(): its promise settles only once the iterator is drained, which a reader
    // that stopped early never does.
    void done.messages.close().catch(() => undefined);
    void done.consumer.delete().catch(() => undefined);
  };

  async function* chunks(): AsyncGenerator<Uint8Array> {
    const hash = createHash('sha256');
    let bytes = 0;
    let lastSeq = 0;
    let progressAt = Date.now();
    let complete = false;
    while (!complete) {
      if (Date.now() - progressAt > timings.giveUpMs) {
        throw Object.assign(new Error(`no chunk of ${info.name} (${chunkSubject}) arrived for ${timings.giveUpMs / 1000} s (${bytes} of ${info.size} bytes read)`), { code: 'ETIMEDOUT' });
      }
      let consumer: Consumer | undefined;
      try {
        const resume = lastSeq > 0 ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: lastSeq + 1 } : {};
        consumer = await js.consumers.get(stream, { filter_subjects: chunkSubject, ...resume });
        // A new consumer with nothing pending, and the stream's leader holding no chunk after the
        // last one read: the chunks still to read are not in the stream (purged by hand or by a
        // stream limit). An object's info is written only after all its chunks are stored, so none
        // is on its way: a missing object, not an outage that waiting out giveUpMs (then retrying
        // the load) would mend. The leader is asked because a consumer's count is its own
        // replica's, which may lag just after a failover: then the read goes on as before.
        if ((await consumer.info()).num_pending === 0 && (await noChunkAfter(js, stream, chunkSubject, lastSeq))) {
          void consumer.delete().catch(() => undefined);
          throw new ObjectDigestError(
            lastSeq === 0
              ? `${info.name}: none of its chunks is in the bucket (${chunkSubject}; ${info.size} bytes recorded)`
              : `${info.name}: its chunks after the ${bytes} bytes read are no longer in the bucket (${chunkSubject}; ${info.size} bytes recorded)`,
          );
        }
        current = { consumer, messages: await consumer.consume({ max_messages: CHUNKS_IN_FLIGHT, expires: timings.pullExpiresMs }) };
      } catch (error) {
        // A create sent to a node that just died times out, or the stream has no leader yet: ask
        // again (the new consumer lands elsewhere).
        if (!isTransientError(error)) throw error;
        // Made, then its info request timed out: not left to the server's inactivity threshold.
        if (consumer && !current) void consumer.delete().catch(() => undefined);
        await sleep(500);
        continue;
      }
      const iterator = current.messages[Symbol.asyncIterator]();
      try {
        for (;;) {
          const next = await nextWithin(iterator, timings.idleMs);
          if (next === 'idle' || next.done) break;
          const message = next.value;
          if (message.seq <= lastSeq) continue;
          lastSeq = message.seq;
          progressAt = Date.now();
          hash.update(message.data);
          bytes += message.data.length;
          yield message.data;
          if (message.info.pending === 0) {
            complete = true;
            break;
          }
        }
      } finally {
        close();
      }
    }
    if (bytes !== info.size || !hash.digest().equals(expected)) {
      // The words of ObjectStore.get() for the same failure ("received a corrupt object, digests do not match").
      throw new ObjectDigestError(`${info.name}: received a corrupt object, digests do not match: ${bytes} bytes read, ${info.size} bytes and ${info.digest} recorded`);
    }
  }

  const readable = Readable.from(chunks(), { objectMode: false });
  readable.once('close', close);
  return readable;
}
