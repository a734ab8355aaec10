import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

/**
 * Passes bytes through while hashing and counting them, so a file is digested in the same
 * pass that writes (dumper) or loads (loader) it, never in a second read.
 */
export class DigestStream extends Transform {
  private readonly hash: Hash = createHash('sha256');
  bytes = 0;
  private digestHex?: string;

  constructor(
    private readonly expected?: { sha256: string; bytes: number; label: string },
    private readonly onBytes?: (bytes: number) => void,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    this.onBytes?.(chunk.length);
    callback(null, chunk);
  }

  /** With an expectation, a mismatch fails the stream before its end reaches the consumer (COPY is then aborted). */
  override _flush(callback: TransformCallback): void {
    this.digestHex = this.hash.digest('hex');
    const expected = this.expected;
    if (expected && (expected.sha256 !== this.digestHex || expected.bytes !== this.bytes)) {
      callback(
        new ChecksumMismatchError(
          `checksum mismatch in ${expected.label}: expected sha256 ${expected.sha256} (${expected.bytes} bytes), got ${this.digestHex} (${this.bytes} bytes)`,
        ),
      );
      return;
    }
    callback();
  }

  get sha256(): string {
    if (!this.digestHex) throw new Error('digest read before the stream ended');
    return this.digestHex;
  }
}

export class ChecksumMismatchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ChecksumMismatchError';
  }
}
