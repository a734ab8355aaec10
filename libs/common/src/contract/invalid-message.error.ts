/**
 * A message that can never be processed (not JSON, wrong fields, a path outside SNAPSHOT_DIR...).
 * The JetStream transport terminates such a message instead of letting it be redelivered forever.
 */
export class InvalidMessageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidMessageError';
  }
}
