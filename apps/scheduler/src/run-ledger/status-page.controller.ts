import { Controller, Get, Header } from '@nestjs/common';
import { STATUS_PAGE_CSP, STATUS_PAGE_HTML } from './status-page.html';

/** `GET /`: the run grid as a page that refreshes itself from `GET /api/runs` (no other route is `/`). */
@Controller()
export class StatusPageController {
  @Get()
  @Header('Content-Type', 'text/html; charset=utf-8')
  @Header('Content-Security-Policy', STATUS_PAGE_CSP)
  @Header('Cache-Control', 'no-cache')
  page(): string {
    return STATUS_PAGE_HTML;
  }
}
