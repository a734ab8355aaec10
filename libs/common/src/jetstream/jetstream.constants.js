"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.JETSTREAM_BINDINGS = exports.NATS_CONFIG = exports.NATS_CONNECTION = void 0;
exports.NATS_CONNECTION = Symbol('NATS_CONNECTION');
exports.NATS_CONFIG = Symbol('NATS_CONFIG');
exports.JETSTREAM_BINDINGS = Symbol('JETSTREAM_BINDINGS');
//# sourceMappingURL=jetstream.constants.js.map