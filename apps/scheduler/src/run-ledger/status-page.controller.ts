import { Controller, Get, Header, Res } from '@nestjs/common';
import type { Response } from 'express';
import { loadStatusPage } from './status-page';

/** `GET /`: the run grid as a page that refreshes itself from `GET /api/runs` (no other route is `/`). */
@Controller()
export class StatusPageController {
  // Read once at boot: a missing or broken page file stops the scheduler at start, not at the first visit.
  private readonly page = loadStatusPage();

  @Get()
  @Header('Content-Type', 'text/html; charset=utf-8')
  @Header('Cache-Control', 'no-cache')
  index(@Res({ passthrough: true }) res: Response): string {
    res.setHeader('Content-Security-Policy', this.page.csp);
    return this.page.html;
  }
}
