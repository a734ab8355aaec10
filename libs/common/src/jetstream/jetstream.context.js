"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.JetStreamContext = void 0;
const microservices_1 = require("@nestjs/microservices");
class JetStreamContext extends microservices_1.BaseRpcContext {
    getMessage() {
        return this.args[0];
    }
    getSubject() {
        return this.args[1];
    }
    getShutdownSignal() {
        return this.args[2];
    }
    getDeliveryCount() {
        return this.args[0].info.deliveryCount;
    }
}
exports.JetStreamContext = JetStreamContext;
//# sourceMappingURL=jetstream.context.js.map