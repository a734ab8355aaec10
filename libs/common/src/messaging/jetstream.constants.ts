export const NATS_CONNECTION = Symbol('NATS_CONNECTION');
export const NATS_CONFIG = Symbol('NATS_CONFIG');
export const JETSTREAM_BINDINGS = Symbol('JETSTREAM_BINDINGS');
