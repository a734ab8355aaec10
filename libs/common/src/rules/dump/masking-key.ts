import { createHash, createHmac } from 'node:crypto';

/** HMAC-SHA256's block size: keys are padded (or first hashed) to it. */
const BLOCK = 64;

/**
 * MASKING_KEY prepared for HMAC-SHA256 computed by PostgreSQL's built-in sha256() (no pgcrypto in
 * production): sha256((K ^ opad) || sha256((K ^ ipad) || message)). The xor-padded keys are
 * derived here and handed to the session; the key itself never leaves the dumper.
 */
export interface MaskingKey {
  /** First 8 hex digits of HMAC(key, "db-fanout key id"): names the key in the manifest without revealing it. */
  id: string;
  /** K ^ 0x36.., as PostgreSQL's bytea hex text (`\x...`). */
  innerPad: string;
  /** K ^ 0x5c.., as PostgreSQL's bytea hex text. */
  outerPad: string;
}

export const MIN_KEY_LENGTH = 16;

export function prepareMaskingKey(secret: string): MaskingKey {
  let key = Buffer.from(secret, 'utf8');
  if (key.length > BLOCK) key = createHash('sha256').update(key).digest();
  const padded = Buffer.alloc(BLOCK);
  key.copy(padded);
  const xor = (byte: number) => `\\x${Buffer.from(padded.map((b) => b ^ byte)).toString('hex')}`;
  return {
    id: createHmac('sha256', secret).update('db-fanout key id').digest('hex').slice(0, 8),
    innerPad: xor(0x36),
    outerPad: xor(0x5c),
  };
}
