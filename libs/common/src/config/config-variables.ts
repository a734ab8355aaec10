import { ConfigError } from './env-reader';

/**
 * The environment variables a config loader reads, found by running it against an empty,
 * recording environment. Tests use it to keep docker-compose.yml and the README's table in step
 * with the code without a second list to maintain.
 */
export function variablesReadBy(load: (env: Record<string, string | undefined>) => unknown): string[] {
  const seen = new Set<string>();
  const env = new Proxy<Record<string, string | undefined>>(
    {},
    {
      get: (_target, key) => {
        if (typeof key === 'string') seen.add(key);
        return undefined;
      },
    },
  );
  try {
    load(env);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
  }
  return [...seen].sort();
}
