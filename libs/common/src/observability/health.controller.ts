import { Controller, Get, HttpStatus, Res } from '@nestjs/common';
import type { Response } from 'express';
import { ReadinessService } from './readiness.service';

@Controller()
export class HealthController {
  constructor(private readonly readiness: ReadinessService) {}

  /** 200 once connected and subscribed (and every other check passes), else 503. */
  @Get('health')
  health(@Res() res: Response): void {
    const ready = this.readiness.isReady();
    res
      .status(ready ? HttpStatus.OK : HttpStatus.SERVICE_UNAVAILABLE)
      .json({ status: ready ? 'ok' : 'unavailable', checks: this.readiness.snapshot() });
  }
}
