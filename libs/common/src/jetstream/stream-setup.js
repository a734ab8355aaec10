"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.ensureStream = ensureStream;
exports.ensureConsumer = ensureConsumer;
const jetstream_1 = require("@nats-io/jetstream");
const transport_node_1 = require("@nats-io/transport-node");
const subjects_1 = require("../contract/subjects");
const NOT_FOUND_CODES = new Set([10059, 10014]);
function isNotFound(error) {
    return error instanceof jetstream_1.JetStreamApiError && NOT_FOUND_CODES.has(error.code);
}
async function ensureStream(jsm, config) {
    try {
        await jsm.streams.info(config.stream);
        return;
    }
    catch (error) {
        if (!isNotFound(error))
            throw error;
    }
    try {
        await jsm.streams.add({
            name: config.stream,
            subjects: (0, subjects_1.streamSubjects)(config.subjectPrefix),
            retention: jetstream_1.RetentionPolicy.Limits,
            storage: jetstream_1.StorageType.File,
            max_age: (0, transport_node_1.nanos)(config.streamMaxAgeMs),
            num_replicas: config.streamReplicas,
            duplicate_window: (0, transport_node_1.nanos)(2 * 60_000),
        });
    }
    catch (error) {
        await jsm.streams.info(config.stream).catch(() => Promise.reject(error));
    }
}
async function ensureConsumer(jsm, config, binding) {
    try {
        await jsm.consumers.info(config.stream, binding.durable);
        return;
    }
    catch (error) {
        if (!isNotFound(error))
            throw error;
    }
    try {
        await jsm.consumers.add(config.stream, {
            durable_name: binding.durable,
            filter_subject: `${config.subjectPrefix}${binding.pattern}`,
            ack_policy: jetstream_1.AckPolicy.Explicit,
            deliver_policy: binding.startAt === 'all' ? jetstream_1.DeliverPolicy.All : jetstream_1.DeliverPolicy.Last,
            ack_wait: (0, transport_node_1.nanos)(config.ackWaitMs),
            max_deliver: binding.maxDeliver,
            max_ack_pending: 100,
        });
    }
    catch (error) {
        await jsm.consumers.info(config.stream, binding.durable).catch(() => Promise.reject(error));
    }
}
//# sourceMappingURL=stream-setup.js.map