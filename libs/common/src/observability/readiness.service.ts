import { Injectable } from '@nestjs/common';

export interface ReadinessCheck {
  ok: boolean;
  detail?: string;
}

/**
 * What /health reports. Each part of an app (the NATS consumer, a database) sets its own check;
 * the app is ready only when every registered check is ok.
 */
@Injectable()
export class ReadinessService {
  private readonly checks = new Map<string, ReadinessCheck>();

  set(name: string, ok: boolean, detail?: string): void {
    this.checks.set(name, { ok, detail });
  }

  isReady(): boolean {
    return this.checks.size > 0 && [...this.checks.values()].every((check) => check.ok);
  }

  snapshot(): Record<string, ReadinessCheck> {
    return Object.fromEntries(this.checks);
  }
}
