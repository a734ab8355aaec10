const UNIT_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * Parses durations written the way operators write them in env files:
 * `500ms`, `30s`, `5m`, `2h`, `7d`. A bare number is rejected on purpose:
 * `RETRY_DELAY=5` is ambiguous (seconds? minutes?) and guessing wrong is worse than refusing.
 */
export function parseDuration(text: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text.trim());
  if (!match) {
    throw new Error(`${JSON.stringify(text)} is not a duration (use e.g. 500ms, 30s, 5m, 2h, 7d)`);
  }
  return Math.round(Number(match[1]) * UNIT_MS[match[2]]);
}

export function formatDuration(ms: number): string {
  if (ms < 1_000) return `${ms}ms`;
  if (ms < 60_000) return `${(ms / 1_000).toFixed(ms % 1_000 === 0 ? 0 : 1)}s`;
  return `${(ms / 60_000).toFixed(ms % 60_000 === 0 ? 0 : 1)}m`;
}
