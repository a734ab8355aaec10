import { createHash } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ChecksumMismatchError, DigestStream } from './digest-stream';

/** A sink that keeps what it receives and remembers whether the end reached it. */
function collector() {
  const chunks: Buffer[] = [];
  const state = { ended: false };
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk);
      callback();
    },
    final(callback) {
      state.ended = true;
      callback();
    },
  });
  return { sink, state, received: () => Buffer.concat(chunks) };
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

const chunks = [Buffer.from('id,name,city\n'), Buffer.from('1,Ada,London\n2,"Grace ""Amazing"" Hopper",NYC\n'), Buffer.from([0xc3, 0xa9, 0x0a]), Buffer.alloc(70_000, 'x')];
const data = Buffer.concat(chunks);

describe('DigestStream', () => {
  it('passes the bytes through unchanged while hashing and counting them', async () => {
    const digest = new DigestStream();
    const { sink, state, received } = collector();
    await pipeline(Readable.from(chunks), digest, sink);
    expect(received().equals(data)).toBe(true);
    expect(state.ended).toBe(true);
    expect(digest.bytes).toBe(data.length);
    expect(digest.sha256).toBe(sha256(data));
  });

  it('gives the same digest however the data is split into chunks', async () => {
    const oneByOne = Array.from(data.subarray(0, 500), (byte) => Buffer.from([byte]));
    const digest = new DigestStream();
    await pipeline(Readable.from(oneByOne), digest, collector().sink);
    expect(digest.bytes).toBe(500);
    expect(digest.sha256).toBe(sha256(data.subarray(0, 500)));
  });

  it('digests an empty stream', async () => {
    const digest = new DigestStream();
    await pipeline(Readable.from([]), digest, collector().sink);
    expect(digest.bytes).toBe(0);
    expect(digest.sha256).toBe(sha256(Buffer.alloc(0)));
  });

  it('refuses to give a digest before the stream has ended', () => {
    expect(() => new DigestStream().sha256).toThrow('digest read before the stream ended');
  });

  it('ends normally when the data matches the expectation', async () => {
    const digest = new DigestStream({ sha256: sha256(data), bytes: data.length, label: 'public.customers' });
    const { sink, state, received } = collector();
    await pipeline(Readable.from(chunks), digest, sink);
    expect(state.ended).toBe(true);
    expect(received().equals(data)).toBe(true);
  });

  it('fails with ChecksumMismatchError naming the label when the digest differs', async () => {
    const tampered = Buffer.from(data);
    tampered[20] ^= 0x01;
    const digest = new DigestStream({ sha256: sha256(data), bytes: data.length, label: '0001_public.customers.csv' });
    const { sink, state } = collector();
    const error: unknown = await pipeline(Readable.from([tampered]), digest, sink).then(
      () => new Error('the pipeline succeeded'),
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ChecksumMismatchError);
    expect(error).toMatchObject({ name: 'ChecksumMismatchError' });
    const message = (error as Error).message;
    expect(message).toContain('checksum mismatch in 0001_public.customers.csv');
    expect(message).toContain(`expected sha256 ${sha256(data)} (${data.length} bytes)`);
    expect(message).toContain(`got ${sha256(tampered)} (${tampered.length} bytes)`);
    // The end never reaches the consumer, so a COPY reading from it is aborted, not committed.
    expect(state.ended).toBe(false);
  });

  it('fails with ChecksumMismatchError naming the label when the byte count differs', async () => {
    const digest = new DigestStream({ sha256: sha256(data), bytes: data.length + 1, label: 'public.orders' });
    const { sink, state } = collector();
    const error: unknown = await pipeline(Readable.from(chunks), digest, sink).then(
      () => new Error('the pipeline succeeded'),
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ChecksumMismatchError);
    expect((error as Error).message).toContain('checksum mismatch in public.orders');
    expect((error as Error).message).toContain(`(${data.length + 1} bytes), got ${sha256(data)} (${data.length} bytes)`);
    expect(state.ended).toBe(false);
  });

  it('fails when data is missing at the end (a truncated file)', async () => {
    const digest = new DigestStream({ sha256: sha256(data), bytes: data.length, label: 'public.truncated' });
    const error: unknown = await pipeline(Readable.from([data.subarray(0, data.length - 1)]), digest, collector().sink).then(
      () => new Error('the pipeline succeeded'),
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ChecksumMismatchError);
    expect((error as Error).message).toContain('public.truncated');
  });
});
