"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.SNAPSHOT_ID_PATTERN = void 0;
exports.parseTriggerPayload = parseTriggerPayload;
exports.parseSnapshotReadyPayload = parseSnapshotReadyPayload;
const dates_1 = require("../util/dates");
const invalid_message_error_1 = require("./invalid-message.error");
exports.SNAPSHOT_ID_PATTERN = /^[0-9]{8}-[0-9a-f]{8}$/;
const SHA256_PATTERN = /^[0-9a-f]{64}$/;
function asObject(value, what) {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
        throw new invalid_message_error_1.InvalidMessageError(`${what} must be a JSON object`);
    }
    return value;
}
function rejectUnknownFields(body, allowed, what) {
    const unknown = Object.keys(body).filter((key) => !allowed.includes(key));
    if (unknown.length)
        throw new invalid_message_error_1.InvalidMessageError(`${what} has unknown field(s): ${unknown.join(', ')}`);
}
function stringField(body, field, what, maxLength = 4096) {
    const value = body[field];
    if (typeof value !== 'string' || value.length === 0) {
        throw new invalid_message_error_1.InvalidMessageError(`${what}.${field} must be a non-empty string`);
    }
    if (value.length > maxLength)
        throw new invalid_message_error_1.InvalidMessageError(`${what}.${field} is longer than ${maxLength} characters`);
    return value;
}
function countField(body, field, what) {
    const value = body[field];
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
        throw new invalid_message_error_1.InvalidMessageError(`${what}.${field} must be a whole number >= 0`);
    }
    return value;
}
function dateField(body, field, what) {
    const value = stringField(body, field, what, 10);
    if (!(0, dates_1.isCalendarDate)(value))
        throw new invalid_message_error_1.InvalidMessageError(`${what}.${field} is not a calendar date YYYY-MM-DD: ${JSON.stringify(value)}`);
    return value;
}
function parseTriggerPayload(body) {
    const what = 'trigger';
    const object = asObject(body, what);
    rejectUnknownFields(object, ['date'], what);
    if (object.date === undefined)
        return {};
    return { date: dateField(object, 'date', what) };
}
function parseSnapshotReadyPayload(body) {
    const what = 'snapshot.ready';
    const object = asObject(body, what);
    rejectUnknownFields(object, ['snapshotId', 'date', 'location', 'createdAt', 'tables'], what);
    const snapshotId = stringField(object, 'snapshotId', what, 64);
    if (!exports.SNAPSHOT_ID_PATTERN.test(snapshotId)) {
        throw new invalid_message_error_1.InvalidMessageError(`${what}.snapshotId ${JSON.stringify(snapshotId)} is not a snapshot id`);
    }
    const createdAt = stringField(object, 'createdAt', what, 64);
    if (Number.isNaN(Date.parse(createdAt)))
        throw new invalid_message_error_1.InvalidMessageError(`${what}.createdAt is not a timestamp`);
    if (!Array.isArray(object.tables) || object.tables.length === 0) {
        throw new invalid_message_error_1.InvalidMessageError(`${what}.tables must be a non-empty array`);
    }
    const tables = object.tables.map((entry, index) => {
        const at = `${what}.tables[${index}]`;
        const table = asObject(entry, at);
        rejectUnknownFields(table, ['name', 'file', 'rows', 'bytes', 'sha256'], at);
        const file = stringField(table, 'file', at, 255);
        if (file.includes('/') || file.includes('\\') || file === '.' || file === '..' || file.includes('\0')) {
            throw new invalid_message_error_1.InvalidMessageError(`${at}.file ${JSON.stringify(file)} must be a plain file name inside the snapshot`);
        }
        const sha256 = stringField(table, 'sha256', at, 64);
        if (!SHA256_PATTERN.test(sha256))
            throw new invalid_message_error_1.InvalidMessageError(`${at}.sha256 is not a hex SHA-256 digest`);
        return {
            name: stringField(table, 'name', at, 1024),
            file,
            rows: countField(table, 'rows', at),
            bytes: countField(table, 'bytes', at),
            sha256,
        };
    });
    return {
        snapshotId,
        date: dateField(object, 'date', what),
        location: stringField(object, 'location', what),
        createdAt,
        tables,
    };
}
//# sourceMappingURL=payloads.js.map