import { RpcException } from '@nestjs/microservices';

/**
 * How a handler tells the transport to finish a message without acking it as done.
 * Nest's exception layer turns plain errors into a generic object, so dispositions travel
 * as RpcException payloads that survive it.
 */
export interface TerminateDisposition {
  disposition: 'terminate';
  reason: string;
}

/** The message can never succeed (invalid, or its failure was already reported): stop redelivery. */
export class TerminateMessage extends RpcException {
  constructor(reason: string) {
    super({ disposition: 'terminate', reason } satisfies TerminateDisposition);
  }
}

/** Anything else a handler threw: the message is handed back, the reason described without row values. */
export interface RedeliverDisposition {
  disposition: 'redeliver';
  reason: string;
}

export function isRedeliverDisposition(value: unknown): value is RedeliverDisposition {
  return typeof value === 'object' && value !== null && (value as { disposition?: unknown }).disposition === 'redeliver';
}

export function isTerminateDisposition(value: unknown): value is TerminateDisposition {
  return typeof value === 'object' && value !== null && (value as { disposition?: unknown }).disposition === 'terminate';
}
