"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.InvalidMessageError = void 0;
class InvalidMessageError extends Error {
    constructor(message) {
        super(message);
        this.name = 'InvalidMessageError';
    }
}
exports.InvalidMessageError = InvalidMessageError;
//# sourceMappingURL=invalid-message.error.js.map