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
var JetStreamModule_1;
Object.defineProperty(exports, "__esModule", { value: true });
exports.JetStreamModule = void 0;
const common_1 = require("@nestjs/common");
const health_controller_1 = require("../health/health.controller");
const readiness_service_1 = require("../health/readiness.service");
const event_publisher_1 = require("./event-publisher");
const jetstream_constants_1 = require("./jetstream.constants");
const jetstream_server_1 = require("./jetstream.server");
const nats_connection_1 = require("./nats-connection");
let NatsConnectionCloser = class NatsConnectionCloser {
    connection;
    logger = new common_1.Logger('NATS');
    constructor(connection) {
        this.connection = connection;
    }
    async onApplicationShutdown() {
        if (this.connection.isClosed())
            return;
        await this.connection.drain().catch((error) => this.logger.warn(`drain failed: ${String(error)}`));
        await this.connection.closed();
    }
};
NatsConnectionCloser = __decorate([
    (0, common_1.Injectable)(),
    __param(0, (0, common_1.Inject)(jetstream_constants_1.NATS_CONNECTION)),
    __metadata("design:paramtypes", [Object])
], NatsConnectionCloser);
let JetStreamModule = JetStreamModule_1 = class JetStreamModule {
    static forRoot(options) {
        return {
            module: JetStreamModule_1,
            controllers: [health_controller_1.HealthController],
            providers: [
                { provide: jetstream_constants_1.NATS_CONFIG, useValue: options.config },
                { provide: jetstream_constants_1.JETSTREAM_BINDINGS, useValue: options.bindings },
                { provide: jetstream_constants_1.NATS_CONNECTION, useFactory: () => (0, nats_connection_1.openNatsConnection)(options.config, options.clientName) },
                NatsConnectionCloser,
                readiness_service_1.ReadinessService,
                event_publisher_1.EventPublisher,
                jetstream_server_1.JetStreamServer,
            ],
            exports: [jetstream_constants_1.NATS_CONFIG, jetstream_constants_1.NATS_CONNECTION, readiness_service_1.ReadinessService, event_publisher_1.EventPublisher, jetstream_server_1.JetStreamServer],
        };
    }
};
exports.JetStreamModule = JetStreamModule;
exports.JetStreamModule = JetStreamModule = JetStreamModule_1 = __decorate([
    (0, common_1.Global)(),
    (0, common_1.Module)({})
], JetStreamModule);
//# sourceMappingURL=jetstream.module.js.map