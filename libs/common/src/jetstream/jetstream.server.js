"use strict";
var __decorate = (this && this.__decorate) || function (decorators, target, key, desc) {
    var c = arguments.length, r = c < 3 ? target : desc === null ? desc = Object.getOwnPropertyDescriptor(target, key) : desc, d;
    if (typeof Reflect === "object" && typeof Reflect.decorate === "function") r = Reflect.decorate(decorators, target, key, desc);
    else for (var i = decorators.length - 1; i >= 0; i--) if (d = decorators[i]) r = (c < 3 ? d(r) : c > 3 ? d(target, key, r) : d(target, key)) || r;
    return c > 3 && r && Object.defineProperty(target, key, r), r;
};
var __metadata = (this && this.__metadata) || function (k, v) {
    if (typeof Reflect === "object" && typeof Reflect.metadata === "function") return Reflect.metadata(k, v);
};
var __param = (this && this.__param) || function (paramIndex, decorator) {
    return function (target, key) { decorator(target, key, paramIndex); }
};
Object.defineProperty(exports, "__esModule", { value: true });
exports.JetStreamServer = void 0;
const common_1 = require("@nestjs/common");
const microservices_1 = require("@nestjs/microservices");
const jetstream_1 = require("@nats-io/jetstream");
const rxjs_1 = require("rxjs");
const promises_1 = require("node:timers/promises");
const readiness_service_1 = require("../health/readiness.service");
const redact_1 = require("../util/redact");
const jetstream_constants_1 = require("./jetstream.constants");
const jetstream_context_1 = require("./jetstream.context");
const message_disposition_1 = require("./message-disposition");
const stream_setup_1 = require("./stream-setup");
const PULL_EXPIRES_MS = 5_000;
const REDELIVERY_DELAY_MS = 5_000;
let JetStreamServer = class JetStreamServer extends microservices_1.Server {
    connection;
    config;
    bindings;
    readiness;
    logger = new common_1.Logger('JetStream');
    stopping = false;
    stopSignal = new AbortController();
    loops = [];
    constructor(connection, config, bindings, readiness) {
        super();
        this.connection = connection;
        this.config = config;
        this.bindings = bindings;
        this.readiness = readiness;
    }
    listen(callback) {
        this.start().then(() => callback(), (error) => callback(error));
    }
    async start() {
        this.readiness.set('nats', false, 'starting');
        const jsm = await (0, jetstream_1.jetstreamManager)(this.connection);
        await (0, stream_setup_1.ensureStream)(jsm, this.config);
        for (const binding of this.bindings) {
            if (!this.getHandlerByPattern(binding.pattern)) {
                throw new Error(`no @EventPattern('${binding.pattern}') handler is registered for consumer ${binding.durable}`);
            }
            await (0, stream_setup_1.ensureConsumer)(jsm, this.config, binding);
        }
        this.loops = this.bindings.map((binding) => this.consumeLoop(binding));
        this.readiness.set('nats', true, `consuming ${this.bindings.map((b) => b.durable).join(', ')}`);
        void this.watchConnection();
    }
    async watchConnection() {
        for await (const status of this.connection.status()) {
            if (status.type === 'disconnect') {
                this.readiness.set('nats', false, 'disconnected from NATS');
                this.logger.warn('disconnected from NATS, reconnecting');
            }
            else if (status.type === 'reconnect') {
                this.readiness.set('nats', !this.stopping, `reconnected to ${status.server}`);
                this.logger.log(`reconnected to NATS at ${status.server}`);
            }
        }
    }
    async consumeLoop(binding) {
        const js = (0, jetstream_1.jetstream)(this.connection);
        while (!this.stopping) {
            let message;
            try {
                const consumer = await js.consumers.get(this.config.stream, binding.durable);
                message = await consumer.next({ expires: PULL_EXPIRES_MS });
            }
            catch (error) {
                if (this.stopping)
                    break;
                this.logger.warn(`pull from ${binding.durable} failed, retrying: ${(0, redact_1.errorMessage)(error)}`);
                await this.pause(1_000);
                await this.recreateConsumerIfMissing(binding);
                continue;
            }
            if (!message)
                continue;
            if (this.stopping) {
                message.nak();
                break;
            }
            await this.process(binding, message);
        }
    }
    async recreateConsumerIfMissing(binding) {
        try {
            await (0, stream_setup_1.ensureConsumer)(await (0, jetstream_1.jetstreamManager)(this.connection), this.config, binding);
        }
        catch {
        }
    }
    async process(binding, message) {
        const where = `${binding.pattern} #${message.seq} (delivery ${message.info.deliveryCount}, consumer ${binding.durable})`;
        let body;
        try {
            const text = message.string();
            body = text.trim() === '' ? {} : JSON.parse(text);
        }
        catch {
            this.logger.warn(`rejected ${where}: body is not JSON`);
            message.term('body is not JSON');
            return;
        }
        const heartbeat = setInterval(() => message.working(), Math.max(500, Math.floor(this.config.ackWaitMs / 3)));
        try {
            const handler = this.getHandlerByPattern(binding.pattern);
            const context = new jetstream_context_1.JetStreamContext([message, binding.pattern, this.stopSignal.signal]);
            await (0, rxjs_1.lastValueFrom)(this.transformToObservable(await handler(body, context)), { defaultValue: undefined });
            clearInterval(heartbeat);
            if (!(await message.ackAck().catch(() => false))) {
                this.logger.warn(`ack of ${where} was not confirmed; a redelivery will be recognised as done`);
            }
        }
        catch (error) {
            clearInterval(heartbeat);
            if ((0, message_disposition_1.isTerminateDisposition)(error)) {
                this.logger.warn(`rejected ${where}: ${error.reason}`);
                message.term(error.reason.slice(0, 200));
            }
            else {
                this.logger.error(`handler failed for ${where}, will be redelivered: ${describeError(error)}`);
                message.nak(REDELIVERY_DELAY_MS);
            }
        }
    }
    async pause(ms) {
        await (0, promises_1.setTimeout)(ms, undefined, { signal: this.stopSignal.signal }).catch(() => undefined);
    }
    async beforeApplicationShutdown() {
        await this.close();
    }
    async close() {
        if (this.stopping) {
            await Promise.allSettled(this.loops);
            return;
        }
        this.stopping = true;
        this.stopSignal.abort();
        this.readiness.set('nats', false, 'shutting down');
        await Promise.allSettled(this.loops);
    }
    on() {
        throw new Error('JetStreamServer does not emit events');
    }
    unwrap() {
        return this.connection;
    }
};
exports.JetStreamServer = JetStreamServer;
exports.JetStreamServer = JetStreamServer = __decorate([
    (0, common_1.Injectable)(),
    __param(0, (0, common_1.Inject)(jetstream_constants_1.NATS_CONNECTION)),
    __param(1, (0, common_1.Inject)(jetstream_constants_1.NATS_CONFIG)),
    __param(2, (0, common_1.Inject)(jetstream_constants_1.JETSTREAM_BINDINGS)),
    __metadata("design:paramtypes", [Object, Object, Array, readiness_service_1.ReadinessService])
], JetStreamServer);
function describeError(error) {
    if (error instanceof Error)
        return (0, redact_1.errorMessage)(error);
    if (typeof error === 'object' && error !== null && 'message' in error)
        return String(error.message);
    return String(error);
}
//# sourceMappingURL=jetstream.server.js.map