import { parseDuration } from './duration';
import { isCalendarDate, isValidTimeZone } from '../contract/dates';

/** Thrown at boot when the environment is unusable; its message is the one line an operator sees. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration: ${problems.join('; ')}`);
    this.name = 'ConfigError';
  }
}

type Env = Record<string, string | undefined>;

/**
 * Reads environment variables, collecting every problem instead of stopping at the first,
 * so one failed boot tells the operator everything that is wrong.
 * Values are never echoed for variables that may hold secrets.
 */
export class EnvReader {
  private readonly problems: string[] = [];

  constructor(private readonly env: Env) {}

  private raw(name: string): string | undefined {
    const value = this.env[name];
    return value === undefined || value.trim() === '' ? undefined : value.trim();
  }

  private fail<T>(name: string, problem: string, fallback: T): T {
    this.problems.push(`${name} ${problem}`);
    return fallback;
  }

  string(name: string, fallback: string): string {
    return this.raw(name) ?? fallback;
  }

  optionalString(name: string): string | undefined {
    return this.raw(name);
  }

  required(name: string): string {
    return this.raw(name) ?? this.fail(name, 'is required', '');
  }

  matching(name: string, pattern: RegExp, description: string, fallback?: string): string {
    const value = this.raw(name) ?? fallback;
    if (value === undefined) return this.fail(name, 'is required', '');
    return pattern.test(value) ? value : this.fail(name, `must be ${description} (got ${JSON.stringify(value)})`, value);
  }

  url(name: string, protocols: string[], fallback?: string): string {
    const value = this.raw(name) ?? fallback;
    if (value === undefined) return this.fail(name, 'is required', '');
    try {
      const parsed = new URL(value);
      if (!protocols.includes(parsed.protocol.replace(/:$/, ''))) {
        return this.fail(name, `must be a ${protocols.join(' or ')} URL`, value);
      }
      return value;
    } catch {
      // Not echoed: a malformed URL may still contain a password.
      return this.fail(name, `is not a valid URL (expected ${protocols[0]}://...)`, value);
    }
  }

  /** A URL when the variable is set, else undefined (the feature it enables stays off). */
  optionalUrl(name: string, protocols: string[]): string | undefined {
    return this.raw(name) === undefined ? undefined : this.url(name, protocols);
  }

  urlList(name: string, protocols: string[], fallback: string): string[] {
    const value = this.raw(name) ?? fallback;
    const urls = value.split(',').map((s) => s.trim()).filter(Boolean);
    for (const url of urls) {
      try {
        const parsed = new URL(url);
        if (!protocols.includes(parsed.protocol.replace(/:$/, ''))) {
          return this.fail(name, `must list ${protocols.join(' or ')} URLs`, urls);
        }
      } catch {
        return this.fail(name, `is not a valid URL list (expected ${protocols[0]}://host:port,...)`, urls);
      }
    }
    return urls.length ? urls : this.fail(name, 'is empty', urls);
  }

  integer(name: string, fallback: number, min: number, max: number): number {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    if (!/^-?\d+$/.test(value)) return this.fail(name, `must be a whole number (got ${JSON.stringify(value)})`, fallback);
    const n = Number(value);
    if (n < min || n > max) return this.fail(name, `must be between ${min} and ${max} (got ${n})`, fallback);
    return n;
  }

  boolean(name: string, fallback: boolean): boolean {
    const value = this.raw(name)?.toLowerCase();
    if (value === undefined) return fallback;
    if (['true', '1', 'yes'].includes(value)) return true;
    if (['false', '0', 'no'].includes(value)) return false;
    return this.fail(name, `must be true or false (got ${JSON.stringify(value)})`, fallback);
  }

  duration(name: string, fallback: string, minMs = 0): number {
    const value = this.raw(name) ?? fallback;
    try {
      const ms = parseDuration(value);
      return ms < minMs ? this.fail(name, `must be at least ${minMs}ms (got ${value})`, ms) : ms;
    } catch (error) {
      return this.fail(name, (error as Error).message.replace(/^"/, 'value "'), 0);
    }
  }

  date(name: string, fallback: string): string {
    const value = this.raw(name) ?? fallback;
    return isCalendarDate(value) ? value : this.fail(name, `must be a date YYYY-MM-DD (got ${JSON.stringify(value)})`, fallback);
  }

  timeZone(name: string, fallback: string): string {
    const value = this.raw(name) ?? fallback;
    return isValidTimeZone(value) ? value : this.fail(name, `is not a known time zone (got ${JSON.stringify(value)})`, fallback);
  }

  list(name: string): string[] {
    const value = this.raw(name);
    return value ? value.split(',').map((s) => s.trim()).filter(Boolean) : [];
  }

  /** Lets a caller add a problem found while interpreting a value (e.g. a bad table name). */
  report(name: string, problem: string): void {
    this.problems.push(`${name} ${problem}`);
  }

  /** Throws one ConfigError listing every problem seen so far. */
  done(): void {
    if (this.problems.length) throw new ConfigError(this.problems);
  }
}
