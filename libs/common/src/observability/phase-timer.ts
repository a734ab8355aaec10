/** Where the time of a long operation went, for one log line: `copy 1800ms, indexes 300ms, ...`. */
export class PhaseTimer {
  private readonly phases: [string, number][] = [];
  private last = Date.now();

  /** Closes the phase that ran since the previous mark (or since construction). */
  mark(phase: string): void {
    const now = Date.now();
    this.phases.push([phase, now - this.last]);
    this.last = now;
  }

  toString(): string {
    return this.phases.map(([phase, ms]) => `${phase} ${ms}ms`).join(', ');
  }
}
