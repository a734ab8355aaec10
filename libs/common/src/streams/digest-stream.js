"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.ChecksumMismatchError = exports.DigestStream = void 0;
const node_crypto_1 = require("node:crypto");
const node_stream_1 = require("node:stream");
class DigestStream extends node_stream_1.Transform {
    expected;
    hash = (0, node_crypto_1.createHash)('sha256');
    bytes = 0;
    digestHex;
    constructor(expected) {
        super();
        this.expected = expected;
    }
    _transform(chunk, _encoding, callback) {
        this.hash.update(chunk);
        this.bytes += chunk.length;
        callback(null, chunk);
    }
    _flush(callback) {
        this.digestHex = this.hash.digest('hex');
        const expected = this.expected;
        if (expected && (expected.sha256 !== this.digestHex || expected.bytes !== this.bytes)) {
            callback(new ChecksumMismatchError(`checksum mismatch in ${expected.label}: expected sha256 ${expected.sha256} (${expected.bytes} bytes), got ${this.digestHex} (${this.bytes} bytes)`));
            return;
        }
        callback();
    }
    get sha256() {
        if (!this.digestHex)
            throw new Error('digest read before the stream ended');
        return this.digestHex;
    }
}
exports.DigestStream = DigestStream;
class ChecksumMismatchError extends Error {
    constructor(message) {
        super(message);
        this.name = 'ChecksumMismatchError';
    }
}
exports.ChecksumMismatchError = ChecksumMismatchError;
//# sourceMappingURL=digest-stream.js.map