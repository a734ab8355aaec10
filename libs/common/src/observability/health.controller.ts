import { Controller, Get, HttpStatus, Res } from '@nestjs/common';
import type { Response } from 'express';
import { ReadinessService } from './readiness.service';

@Controller()
export class HealthController {
  constructor(private readonly readiness: ReadinessService) {}

  /**
   * Liveness: 200 whenever the process answers HTTP. /health says whether the app can work right
   * now, and is 503 while NATS or its database is away, which the app rides out on its own (it
   * keeps its messages and retries): a liveness probe on /health restarted it in the middle of
   * that, spending a delivery of its message on every restart.
   */
  @Get('health/live')
  live(): { status: 'ok' } {
    return { status: 'ok' };
  }

  /** 200 once connected and subscribed (and every other check passes), else 503. */
  @Get('health')
  health(@Res() res: Response): void {
    const ready = this.readiness.isReady();
    res
      .status(ready ? HttpStatus.OK : HttpStatus.SERVICE_UNAVAILABLE)
      .json({ status: ready ? 'ok' : 'unavailable', checks: this.readiness.snapshot() });
  }
}
