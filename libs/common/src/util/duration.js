"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.parseDuration = parseDuration;
exports.formatDuration = formatDuration;
const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };
function parseDuration(text) {
    const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text.trim());
    if (!match) {
        throw new Error(`"${text}" is not a duration (use e.g. 500ms, 30s, 5m, 2h, 7d)`);
    }
    return Math.round(Number(match[1]) * UNIT_MS[match[2]]);
}
function formatDuration(ms) {
    if (ms < 1_000)
        return `${ms}ms`;
    if (ms < 60_000)
        return `${(ms / 1_000).toFixed(ms % 1_000 === 0 ? 0 : 1)}s`;
    return `${(ms / 60_000).toFixed(ms % 60_000 === 0 ? 0 : 1)}m`;
}
//# sourceMappingURL=duration.js.map