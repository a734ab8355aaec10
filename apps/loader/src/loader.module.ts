import { DynamicModule, Module } from '@nestjs/common';
import { DatabaseReadiness, JetStreamModule, type LoaderConfig, SUBJECTS, ReadinessService } from '@app/common';
import { LOADER_CONFIG } from './loader.constants';
import { LoaderController } from './loader.controller';
import { LoaderService } from './loader.service';

@Module({})
export class LoaderModule {
  static forRoot(config: LoaderConfig): DynamicModule {
    return {
      module: LoaderModule,
      imports: [
        JetStreamModule.forRoot({
          config: config.nats,
          clientName: `db-fanout-loader-${config.environment}`,
          // One durable consumer per environment: every environment gets every snapshot, replicas of
          // one environment share it, and a new environment starts from the latest snapshot.
          bindings: [{ pattern: SUBJECTS.snapshotReady, durable: `loader-${config.environment}`, startAt: 'last', maxDeliver: 10 }],
        }),
      ],
      controllers: [LoaderController],
      providers: [
        { provide: LOADER_CONFIG, useValue: config },
        LoaderService,
        {
          provide: DatabaseReadiness,
          useFactory: (readiness: ReadinessService) => new DatabaseReadiness(readiness, 'target-database', config.targetDatabaseUrl),
          inject: [ReadinessService],
        },
      ],
    };
  }
}
