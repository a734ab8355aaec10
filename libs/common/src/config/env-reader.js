"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.EnvReader = exports.ConfigError = void 0;
const duration_1 = require("../util/duration");
const dates_1 = require("../util/dates");
class ConfigError extends Error {
    problems;
    constructor(problems) {
        super(`Invalid configuration: ${problems.join('; ')}`);
        this.problems = problems;
        this.name = 'ConfigError';
    }
}
exports.ConfigError = ConfigError;
class EnvReader {
    env;
    problems = [];
    constructor(env) {
        this.env = env;
    }
    raw(name) {
        const value = this.env[name];
        return value === undefined || value.trim() === '' ? undefined : value.trim();
    }
    fail(name, problem, fallback) {
        this.problems.push(`${name} ${problem}`);
        return fallback;
    }
    string(name, fallback) {
        return this.raw(name) ?? fallback;
    }
    optionalString(name) {
        return this.raw(name);
    }
    required(name) {
        return this.raw(name) ?? this.fail(name, 'is required', '');
    }
    matching(name, pattern, description, fallback) {
        const value = this.raw(name) ?? fallback;
        if (value === undefined)
            return this.fail(name, 'is required', '');
        return pattern.test(value) ? value : this.fail(name, `must be ${description} (got ${JSON.stringify(value)})`, value);
    }
    url(name, protocols, fallback) {
        const value = this.raw(name) ?? fallback;
        if (value === undefined)
            return this.fail(name, 'is required', '');
        try {
            const parsed = new URL(value);
            if (!protocols.includes(parsed.protocol.replace(/:$/, ''))) {
                return this.fail(name, `must be a ${protocols.join(' or ')} URL`, value);
            }
            return value;
        }
        catch {
            return this.fail(name, `is not a valid URL (expected ${protocols[0]}://...)`, value);
        }
    }
    urlList(name, protocols, fallback) {
        const value = this.raw(name) ?? fallback;
        const urls = value.split(',').map((s) => s.trim()).filter(Boolean);
        for (const url of urls) {
            try {
                const parsed = new URL(url);
                if (!protocols.includes(parsed.protocol.replace(/:$/, ''))) {
                    return this.fail(name, `must list ${protocols.join(' or ')} URLs`, urls);
                }
            }
            catch {
                return this.fail(name, `is not a valid URL list (expected ${protocols[0]}://host:port,...)`, urls);
            }
        }
        return urls.length ? urls : this.fail(name, 'is empty', urls);
    }
    integer(name, fallback, min, max) {
        const value = this.raw(name);
        if (value === undefined)
            return fallback;
        if (!/^-?\d+$/.test(value))
            return this.fail(name, `must be a whole number (got ${JSON.stringify(value)})`, fallback);
        const n = Number(value);
        if (n < min || n > max)
            return this.fail(name, `must be between ${min} and ${max} (got ${n})`, fallback);
        return n;
    }
    boolean(name, fallback) {
        const value = this.raw(name)?.toLowerCase();
        if (value === undefined)
            return fallback;
        if (['true', '1', 'yes'].includes(value))
            return true;
        if (['false', '0', 'no'].includes(value))
            return false;
        return this.fail(name, `must be true or false (got ${JSON.stringify(value)})`, fallback);
    }
    duration(name, fallback, minMs = 0) {
        const value = this.raw(name) ?? fallback;
        try {
            const ms = (0, duration_1.parseDuration)(value);
            return ms < minMs ? this.fail(name, `must be at least ${minMs}ms (got ${value})`, ms) : ms;
        }
        catch (error) {
            return this.fail(name, error.message.replace(/^"/, 'value "'), 0);
        }
    }
    date(name, fallback) {
        const value = this.raw(name) ?? fallback;
        return (0, dates_1.isCalendarDate)(value) ? value : this.fail(name, `must be a date YYYY-MM-DD (got ${JSON.stringify(value)})`, fallback);
    }
    timeZone(name, fallback) {
        const value = this.raw(name) ?? fallback;
        return (0, dates_1.isValidTimeZone)(value) ? value : this.fail(name, `is not a known time zone (got ${JSON.stringify(value)})`, fallback);
    }
    list(name) {
        const value = this.raw(name);
        return value ? value.split(',').map((s) => s.trim()).filter(Boolean) : [];
    }
    report(name, problem) {
        this.problems.push(`${name} ${problem}`);
    }
    done() {
        if (this.problems.length)
            throw new ConfigError(this.problems);
    }
}
exports.EnvReader = EnvReader;
//# sourceMappingURL=env-reader.js.map