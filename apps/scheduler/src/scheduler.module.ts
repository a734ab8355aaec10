import { DynamicModule, Module } from '@nestjs/common';
import { ScheduleModule } from '@nestjs/schedule';
import { type SchedulerConfig } from '@app/common/config';
import { JetStreamModule } from '@app/common/messaging';
import { ObservabilityModule } from '@app/common/observability';
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
    return {
      module: SchedulerModule,
      imports: [
        ObservabilityModule.forRoot(),
        ScheduleModule.forRoot(),
        // The scheduler only publishes; it consumes nothing.
        JetStreamModule.forRoot({ config: config.nats, clientName: 'db-fanout-scheduler', bindings: [] }),
      ],
      controllers: [RunsController, StatusPageController],
      providers: [{ provide: SCHEDULER_CONFIG, useValue: config }, TriggerScheduler, CatchUpService, RunLedgerService, AlertWebhookService],
    };
  }
}
