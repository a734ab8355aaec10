import { DynamicModule, Module } from '@nestjs/common';
import { type DumperConfig } from '@app/common/config';
import { SUBJECTS } from '@app/common/contract';
import { DatabaseReadiness } from '@app/common/database';
import { JetStreamModule } from '@app/common/messaging';
import { ObservabilityModule, ReadinessService } from '@app/common/observability';
import { DUMPER_CONFIG } from './dumper.constants';
import { DumperController } from './dumper.controller';
import { DumperService } from './dumper.service';
import { SourceDatabase } from './source-database';

@Module({})
export class DumperModule {
  static forRoot(config: DumperConfig): DynamicModule {
    return {
      module: DumperModule,
      imports: [
        ObservabilityModule.forRoot(),
        JetStreamModule.forRoot({
          config: config.nats,
          clientName: 'db-fanout-dumper',
          // Replicas of the dumper share one consumer: each trigger is dumped once.
          bindings: [{ pattern: SUBJECTS.trigger, durable: 'dumper', startAt: 'all', maxDeliver: 10 }],
        }),
      ],
      controllers: [DumperController],
      providers: [
        { provide: DUMPER_CONFIG, useValue: config },
        DumperService,
        { provide: SourceDatabase, useFactory: () => new SourceDatabase(config.sourceDatabaseUrl, config.dumpJobs) },
        {
          provide: DatabaseReadiness,
          useFactory: (readiness: ReadinessService) => new DatabaseReadiness(readiness, 'source-database', config.sourceDatabaseUrl),
          inject: [ReadinessService],
        },
      ],
    };
  }
}
