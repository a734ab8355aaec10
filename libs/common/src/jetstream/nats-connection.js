"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.natsConnectionOptions = natsConnectionOptions;
exports.openNatsConnection = openNatsConnection;
const node_fs_1 = require("node:fs");
const transport_node_1 = require("@nats-io/transport-node");
function natsConnectionOptions(config, name) {
    return {
        servers: config.servers,
        name,
        user: config.user,
        pass: config.password,
        token: config.token,
        authenticator: config.credsFile ? (0, transport_node_1.credsAuthenticator)((0, node_fs_1.readFileSync)(config.credsFile)) : undefined,
        tls: config.tls,
        maxReconnectAttempts: -1,
        reconnectTimeWait: 1_000,
        pingInterval: 10_000,
    };
}
async function openNatsConnection(config, name) {
    try {
        return await (0, transport_node_1.connect)({ ...natsConnectionOptions(config, name), timeout: 10_000 });
    }
    catch (error) {
        throw new Error(`cannot connect to NATS at ${config.servers.join(',')}: ${error.message}`, { cause: error });
    }
}
//# sourceMappingURL=nats-connection.js.map