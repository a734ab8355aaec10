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
exports.EventPublisher = void 0;
const common_1 = require("@nestjs/common");
const jetstream_1 = require("@nats-io/jetstream");
const jetstream_constants_1 = require("./jetstream.constants");
let EventPublisher = class EventPublisher {
    config;
    js;
    constructor(connection, config) {
        this.config = config;
        this.js = (0, jetstream_1.jetstream)(connection);
    }
    async publish(subject, payload, msgID) {
        await this.js.publish(`${this.config.subjectPrefix}${subject}`, JSON.stringify(payload), msgID ? { msgID } : undefined);
    }
};
exports.EventPublisher = EventPublisher;
exports.EventPublisher = EventPublisher = __decorate([
    (0, common_1.Injectable)(),
    __param(0, (0, common_1.Inject)(jetstream_constants_1.NATS_CONNECTION)),
    __param(1, (0, common_1.Inject)(jetstream_constants_1.NATS_CONFIG)),
    __metadata("design:paramtypes", [Object, Object])
], EventPublisher);
//# sourceMappingURL=event-publisher.js.map