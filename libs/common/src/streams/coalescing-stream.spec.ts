import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { CoalescingStream } from './coalescing-stream';

async function through(chunks: Buffer[], size: number): Promise<Buffer[]> {
  const out: Buffer[] = [];
  await pipeline(
    Readable.from(chunks),
    new CoalescingStream(size),
    new Writable({
      write(chunk: Buffer, _encoding, callback) {
        out.push(chunk);
        callback();
      },
    }),
  );
  return out;
}

describe('CoalescingStream', () => {
  it('passes every byte through in order, in buffers of at least the size but the last', async () => {
    const chunks = Array.from({ length: 100 }, (_, i) => Buffer.alloc(1000 + i, String.fromCharCode(65 + (i % 26))));
    const out = await through(chunks, 16_384);
    expect(Buffer.concat(out).equals(Buffer.concat(chunks))).toBe(true);
    expect(out.slice(0, -1).every((b) => b.length >= 16_384)).toBe(true);
    expect(out.length).toBeLessThan(chunks.length / 10);
  });

  it('passes a chunk larger than the size on as it is, and ends cleanly with nothing pending', async () => {
    const big = Buffer.alloc(50_000, 'x');
    expect(await through([big], 16_384)).toEqual([big]);
    expect(await through([], 16_384)).toEqual([]);
  });
});
