import { Controller, Get } from '@nestjs/common';
import type { RunRecord } from '@app/common/contract';
import { RunLedgerService } from './run-ledger.service';

@Controller('api')
export class RunsController {
  constructor(private readonly ledger: RunLedgerService) {}

  /** Every run (a date) with the state of its dump and of each environment's load, newest first. */
  @Get('runs')
  runs(): Promise<RunRecord[]> {
    return this.ledger.runs();
  }
}
