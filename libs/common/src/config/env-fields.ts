import { accessSync, constants, statSync } from 'node:fs';
import { z } from 'zod';
import { parseDuration } from './duration';
import { isCalendarDate, isValidTimeZone } from '../contract/dates';
import { parseQualifiedName, splitQualifiedNames } from '../database/sql';

// The field types of the environment schemas (app-config.ts): each reads one variable and reports
// what is wrong with it in the words the operator sees, `<VARIABLE> <problem>`.

/** A variable as read: trimmed, and an empty or blank one counts as unset. */
const variable = z
  .string()
  .optional()
  .transform((value) => (value === undefined || value.trim() === '' ? undefined : value.trim()));

type Report = (problem: string) => never;

/** A field type: `read` turns the variable into its value, or reports what is wrong (and may report several things). */
function field<T>(read: (value: string | undefined, report: Report) => T) {
  return variable.transform((value, ctx) => {
    const report: Report = (problem) => {
      ctx.addIssue({ code: 'custom', message: problem });
      return z.NEVER;
    };
    return read(value, report);
  });
}

export const text = (fallback: string) => field((value) => value ?? fallback);

export const optionalText = () => field((value) => value);

/**
 * The path of a file the process reads later (a `.creds` file, a certificate): checked at boot, so a
 * wrong path is named by its variable, not by a connect error deep in a client library. A path is
 * not a secret; the file's content is never read here.
 */
export const readableFile = () =>
  field((value, report) => {
    if (value === undefined) return undefined;
    try {
      if (!statSync(value).isFile()) return report(`names ${JSON.stringify(value)}, which is not a file`);
      accessSync(value, constants.R_OK);
      return value;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? 'error';
      return report(`names ${JSON.stringify(value)}, which cannot be read (${code})`);
    }
  });

/**
 * A token that guards endpoints when set. Unlike other variables, a blank one is refused rather
 * than read as unset: `HTTP_TOKEN=` from an unfilled secret would otherwise leave the endpoints open.
 */
const PLACEHOLDER = 'CHANGE-ME';

export const accessToken = (guards: string) =>
  z
    .string()
    .optional()
    .transform((value, ctx) => {
      if (value !== undefined && value.trim() === PLACEHOLDER) {
        // deploy/kubernetes/secrets.yaml ships it: applied unedited, the token would be public knowledge.
        ctx.addIssue({ code: 'custom', message: `is still the placeholder ${PLACEHOLDER} of deploy/kubernetes/secrets.yaml: set a secret of your own` });
        return z.NEVER;
      }
      if (value === undefined || value.trim() !== '') return value?.trim();
      ctx.addIssue({ code: 'custom', message: `is set but blank: give it a value, or remove it to leave ${guards} open` });
      return z.NEVER;
    });

export const matching = (pattern: RegExp, description: string, fallback?: string) =>
  field((value = fallback, report) => {
    if (value === undefined) return report('is required');
    return pattern.test(value) ? value : report(`must be ${description} (got ${JSON.stringify(value)})`);
  });

function checkUrl(value: string, protocols: string[], report: Report): string {
  let protocol: string;
  try {
    protocol = new URL(value).protocol.replace(/:$/, '');
  } catch {
    // Not echoed: a malformed URL may still contain a password.
    return report(`is not a valid URL (expected ${protocols[0]}://...)`);
  }
  return protocols.includes(protocol) ? value : report(`must be a ${protocols.join(' or ')} URL`);
}

export const url = (protocols: string[], fallback?: string) =>
  field((value = fallback, report) => (value === undefined ? report('is required') : checkUrl(value, protocols, report)));

/** A URL when the variable is set, else undefined (the feature it enables stays off). */
export const optionalUrl = (protocols: string[]) => field((value, report) => (value === undefined ? undefined : checkUrl(value, protocols, report)));

export const urlList = (protocols: string[], fallback: string) =>
  field((value = fallback, report) => {
    const urls = value
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    for (const url of urls) {
      let protocol: string;
      try {
        protocol = new URL(url).protocol.replace(/:$/, '');
      } catch {
        return report(`is not a valid URL list (expected ${protocols[0]}://host:port,...)`);
      }
      if (!protocols.includes(protocol)) return report(`must list ${protocols.join(' or ')} URLs`);
    }
    return urls.length ? urls : report('is empty');
  });

export const integer = (fallback: number, min: number, max: number) =>
  field((value, report) => {
    if (value === undefined) return fallback;
    if (!/^-?\d+$/.test(value)) return report(`must be a whole number (got ${JSON.stringify(value)})`);
    const n = Number(value);
    return n < min || n > max ? report(`must be between ${min} and ${max} (got ${n})`) : n;
  });

export const boolean = (fallback: boolean) =>
  field((raw, report) => {
    const value = raw?.toLowerCase();
    if (value === undefined) return fallback;
    if (['true', '1', 'yes'].includes(value)) return true;
    if (['false', '0', 'no'].includes(value)) return false;
    return report(`must be true or false (got ${JSON.stringify(value)})`);
  });

/** In milliseconds, from `500ms`, `30s`, `5m`, `2h`, `7d` (see parseDuration). */
export const duration = (fallback: string, min: number | { ms: number; why: string } = 0, max?: { ms: number; why: string }) =>
  field((value = fallback, report) => {
    let ms: number;
    try {
      ms = parseDuration(value);
    } catch (error) {
      return report((error as Error).message.replace(/^"/, 'value "'));
    }
    const least = typeof min === 'number' ? { ms: min, why: `${min}ms` } : min;
    if (ms < least.ms) return report(`must be at least ${least.why} (got ${value})`);
    return max && ms > max.ms ? report(`must be at most ${max.why} (got ${value})`) : ms;
  });

/** The longest wait Node's timers make (2^31-1 ms): a longer one fires at once, so 24 days. */
export const LONGEST_WAIT = { ms: 24 * 86_400_000, why: '24d, the longest wait a timer makes' };

/** PostgreSQL's memory units (case as PostgreSQL spells them), in kB. */
const MEMORY_UNITS_KB: Record<string, number> = { kB: 1, MB: 1024, GB: 1024 ** 2, TB: 1024 ** 3 };

/** `64MB` in kB, or undefined when the text is not a size with one of PostgreSQL's units. */
export function memorySizeKb(value: string): number | undefined {
  const match = /^(\d+)\s*(kB|MB|GB|TB)$/.exec(value);
  return match ? Number(match[1]) * MEMORY_UNITS_KB[match[2]] : undefined;
}

/**
 * In kB (PostgreSQL's unit for maintenance_work_mem), from a size as PostgreSQL writes it: `64MB`,
 * `1GB`, `512kB`. The unit is required: a bare number would mean kB to PostgreSQL and bytes to many readers.
 */
export const memorySize = (fallback: string, minKb: number, maxKb: number) =>
  field((value = fallback, report) => {
    const kb = memorySizeKb(value);
    if (kb === undefined) return report(`must be a size in kB, MB, GB or TB, such as 256MB (got ${JSON.stringify(value)})`);
    return kb < minKb || kb > maxKb ? report(`must be between ${formatKb(minKb)} and ${formatKb(maxKb)} (got ${value})`) : kb;
  });

/** `1GB`, `256MB`, `2147483647kB`: the largest unit that states the size exactly. */
function formatKb(kb: number): string {
  const [unit, size] = Object.entries(MEMORY_UNITS_KB).reverse().find(([, size]) => kb % size === 0)!;
  return `${kb / size}${unit}`;
}

export const date = (fallback: string) =>
  field((value = fallback, report) => (isCalendarDate(value) ? value : report(`must be a date YYYY-MM-DD (got ${JSON.stringify(value)})`)));

/** A date YYYY-MM-DD, or undefined when unset (blank counts as unset). */
export const optionalDate = () =>
  field((value, report) => {
    if (value === undefined || value.trim() === '') return undefined;
    return isCalendarDate(value) ? value : report(`must be a date YYYY-MM-DD (got ${JSON.stringify(value)})`);
  });

export const timeZone = (fallback: string) =>
  field((value = fallback, report) => (isValidTimeZone(value) ? value : report(`is not a known time zone (got ${JSON.stringify(value)})`)));

/** A comma list; empty entries are dropped. */
export const list = () =>
  field((value) =>
    (value ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean),
  );

/**
 * A comma list of `schema.table` (quoted where needed, and then a comma may be part of a name);
 * every bad entry is its own problem.
 */
export const tables = () =>
  field((value, report) => {
    const entries = splitQualifiedNames(value ?? '')
      .map((s) => s.trim())
      .filter(Boolean);
    const parsed: { schema: string; name: string }[] = [];
    const problems: string[] = [];
    for (const entry of entries) {
      try {
        parsed.push(parseQualifiedName(entry));
      } catch (error) {
        problems.push(`has a bad entry: ${(error as Error).message}`);
      }
    }
    problems.forEach((problem) => report(problem));
    return problems.length ? z.NEVER : parsed;
  });
