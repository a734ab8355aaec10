"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.TerminateMessage = void 0;
exports.isTerminateDisposition = isTerminateDisposition;
const microservices_1 = require("@nestjs/microservices");
class TerminateMessage extends microservices_1.RpcException {
    constructor(reason) {
        super({ disposition: 'terminate', reason });
    }
}
exports.TerminateMessage = TerminateMessage;
function isTerminateDisposition(value) {
    return typeof value === 'object' && value !== null && value.disposition === 'terminate';
}
//# sourceMappingURL=message-disposition.js.map