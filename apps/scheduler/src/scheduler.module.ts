import { DynamicModule, Module } from '@nestjs/common';
import { serviceModule } from '@app/common/bootstrap';
import { ScheduleModule } from '@nestjs/schedule';
import { type SchedulerConfig } from '@app/common/config';
import { SCHEDULER_CONFIG } from './scheduler.constants';
import { AlertWebhookService } from './alerts/alert-webhook.service';
import { CatchUpService } from './catch-up.service';
import { RunLedgerService } from './run-ledger/run-ledger.service';
import { RunsController } from './run-ledger/runs.controller';
import { StatusPageController } from './run-ledger/status-page.controller';
import { TriggerScheduler } from './trigger-scheduler.service';

@Module({})
export class SchedulerModule {
  static forRoot(config: SchedulerConfig): DynamicModule {
    // The scheduler only publishes; it consumes nothing.
    return serviceModule(SchedulerModule, { config: config.nats, clientName: 'db-fanout-scheduler', bindings: [] }, {
      imports: [ScheduleModule.forRoot()],
      controllers: [RunsController, StatusPageController],
      providers: [{ provide: SCHEDULER_CONFIG, useValue: config }, TriggerScheduler, CatchUpService, RunLedgerService, AlertWebhookService],
    });
  }
}
