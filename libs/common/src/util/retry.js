"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.RetriesExhaustedError = void 0;
exports.isTransientError = isTransientError;
exports.withRetry = withRetry;
const promises_1 = require("node:timers/promises");
const TRANSIENT_SQLSTATE_CLASSES = ['08', '53', '58'];
const TRANSIENT_SQLSTATES = new Set(['40001', '40P01', '55P03', '57P01', '57P02', '57P03']);
const TRANSIENT_NODE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ENOTFOUND']);
const TRANSIENT_MESSAGES = [/Connection terminated/i, /connection timeout/i, /Client has encountered a connection error/i];
function isTransientError(error) {
    if (typeof error !== 'object' || error === null)
        return false;
    const { code, message } = error;
    if (typeof code === 'string') {
        if (TRANSIENT_SQLSTATES.has(code) || TRANSIENT_NODE_CODES.has(code))
            return true;
        if (/^[0-9A-Z]{5}$/.test(code) && TRANSIENT_SQLSTATE_CLASSES.some((prefix) => code.startsWith(prefix)))
            return true;
    }
    if (error instanceof AggregateError)
        return error.errors.some(isTransientError);
    return typeof message === 'string' && TRANSIENT_MESSAGES.some((pattern) => pattern.test(message));
}
class RetriesExhaustedError extends Error {
    attempts;
    lastError;
    constructor(attempts, lastError) {
        super(lastError instanceof Error ? lastError.message : String(lastError), { cause: lastError });
        this.attempts = attempts;
        this.lastError = lastError;
        this.name = 'RetriesExhaustedError';
    }
}
exports.RetriesExhaustedError = RetriesExhaustedError;
async function withRetry(policy, work, onRetry = () => undefined, signal) {
    for (let attempt = 1;; attempt++) {
        try {
            return { result: await work(attempt), attempts: attempt };
        }
        catch (error) {
            const canRetry = attempt <= policy.retries && isTransientError(error) && !signal?.aborted;
            if (!canRetry)
                throw new RetriesExhaustedError(attempt, error);
            onRetry(attempt, error);
            try {
                await (0, promises_1.setTimeout)(policy.delayMs, undefined, { signal });
            }
            catch {
                throw new RetriesExhaustedError(attempt, error);
            }
        }
    }
}
//# sourceMappingURL=retry.js.map