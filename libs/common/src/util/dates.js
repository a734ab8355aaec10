"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.isCalendarDate = isCalendarDate;
exports.dateInTimeZone = dateInTimeZone;
exports.isValidTimeZone = isValidTimeZone;
exports.compactDate = compactDate;
const ISO_DATE = /^(\d{4})-(\d{2})-(\d{2})$/;
function isCalendarDate(value) {
    const match = ISO_DATE.exec(value);
    if (!match)
        return false;
    const [year, month, day] = [Number(match[1]), Number(match[2]), Number(match[3])];
    const date = new Date(Date.UTC(year, month - 1, day));
    return date.getUTCFullYear() === year && date.getUTCMonth() === month - 1 && date.getUTCDate() === day;
}
function dateInTimeZone(instant, timeZone) {
    return new Intl.DateTimeFormat('en-CA', {
        timeZone,
        year: 'numeric',
        month: '2-digit',
        day: '2-digit',
    }).format(instant);
}
function isValidTimeZone(timeZone) {
    try {
        new Intl.DateTimeFormat('en-US', { timeZone });
        return true;
    }
    catch {
        return false;
    }
}
function compactDate(date) {
    return date.replaceAll('-', '');
}
//# sourceMappingURL=dates.js.map