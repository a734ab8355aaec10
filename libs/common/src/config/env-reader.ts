import type { z } from 'zod';

/** Thrown at boot when the environment is unusable; its message is the one line an operator sees. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration: ${problems.join('; ')}`);
    this.name = 'ConfigError';
  }
}

type Env = Record<string, string | undefined>;

/**
 * The schema of an app's environment: one zod object keyed by variable name, each value read by one
 * of the field types in env-fields.ts. zod checks every variable before giving up, so one failed boot names
 * every problem; each problem is `<VARIABLE> <what is wrong>`. A value is quoted in a problem only
 * where it cannot hold a secret (never a URL, which may carry a password).
 */
export function readEnv<S extends z.ZodType>(schema: S, source: Env): z.output<S> {
  const result = schema.safeParse(source);
  if (!result.success) throw new ConfigError(result.error.issues.map((issue) => `${issue.path.join('.')} ${issue.message}`));
  return result.data;
}

/** An app's config loader: reads `process.env` unless given another environment (tests do). */
export function envLoader<S extends z.ZodType>(schema: S): (source?: Env) => z.output<S> {
  return (source = process.env) => readEnv(schema, source);
}
