/**
 * Reports the progress of a long dump or load every few seconds: bytes done (of the total when it
 * is known from the manifest), throughput and an ETA. Quiet for work that finishes sooner.
 */
export class ProgressMeter {
  private bytes = 0;
  private rows = 0;
  private readonly started = Date.now();
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly report: (line: string) => void,
    private readonly totalBytes?: number,
    private readonly intervalMs = 5_000,
  ) {}

  start(): this {
    this.timer = setInterval(() => this.report(this.describe()), this.intervalMs);
    this.timer.unref();
    return this;
  }

  add(bytes: number): void {
    this.bytes += bytes;
  }

  addRows(rows: number): void {
    this.rows += rows;
  }

  stop(): void {
    clearInterval(this.timer);
  }

  describe(now = Date.now()): string {
    const seconds = Math.max((now - this.started) / 1000, 0.001);
    const mb = this.bytes / 1e6;
    const rate = mb / seconds;
    const parts = [this.totalBytes ? `${mb.toFixed(1)}/${(this.totalBytes / 1e6).toFixed(1)} MB` : `${mb.toFixed(1)} MB`];
    if (this.rows) parts.push(`${this.rows} rows`);
    parts.push(`${rate.toFixed(1)} MB/s`);
    if (this.totalBytes && rate > 0) parts.push(`ETA ${Math.max(0, Math.round((this.totalBytes / 1e6 - mb) / rate))}s`);
    return parts.join(', ');
  }
}
