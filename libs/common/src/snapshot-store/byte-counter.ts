import { type Readable, Transform } from 'node:stream';

/** Passes a stream through unchanged and counts its bytes, for stores that do not report sizes. */
export function countBytes(source: Readable): { stream: Readable; bytes: () => number } {
  let bytes = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      bytes += chunk.length;
      callback(null, chunk);
    },
  });
  source.on('error', (error) => counter.destroy(error));
  source.pipe(counter);
  return { stream: counter, bytes: () => bytes };
}
