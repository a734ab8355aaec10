import { AsyncLocalStorage } from 'node:async_hooks';

/**
 * Fields every log line of a unit of work carries (the message being handled, the snapshot, the
 * environment), without passing them to every logger call: set once where the work starts.
 */
const storage = new AsyncLocalStorage<Record<string, string | number>>();

export function withLogContext<T>(fields: Record<string, string | number | undefined>, work: () => T): T {
  const merged = { ...storage.getStore() };
  for (const [key, value] of Object.entries(fields)) if (value !== undefined) merged[key] = value;
  return storage.run(merged, work);
}

export function currentLogContext(): Record<string, string | number> {
  return storage.getStore() ?? {};
}
