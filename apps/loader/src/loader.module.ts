import { DynamicModule, Module } from '@nestjs/common';
import { serviceModule } from '@app/common/bootstrap';
import { type LoaderConfig } from '@app/common/config';
import { reloadSubject, SUBJECTS } from '@app/common/contract';
import { DatabaseReadiness } from '@app/common/database';
import { type ConsumerBinding } from '@app/common/messaging';
import { ReadinessService } from '@app/common/observability';
import { TargetDatabase } from './database/target-database';
import { LOADER_CONFIG } from './loader.constants';
import { LoaderController } from './loader.controller';
import { LoaderService } from './loader.service';

@Module({})
export class LoaderModule {
  static forRoot(config: LoaderConfig): DynamicModule {
    // One durable consumer per environment: every environment gets every snapshot, replicas of
    // one environment share it, and a new environment starts from the latest snapshot.
    const bindings: ConsumerBinding[] = [
      // One snapshot at a time per environment, in the order they were announced: replicas take
      // over from each other, and an older snapshot can never be loaded after a newer one.
      { pattern: SUBJECTS.snapshotReady, durable: `loader-${config.environment}`, startAt: 'last', maxDeliver: 10, maxAckPending: 1 },
      // Reloads asked for by hand (`db-fanout reload --env`), for this environment only.
      { pattern: SUBJECTS.reload, subject: reloadSubject(config.environment), durable: `loader-${config.environment}-reload`, startAt: 'new', maxDeliver: 10, maxAckPending: 1 },
    ];
    return serviceModule(LoaderModule, { config: config.nats, clientName: `db-fanout-loader-${config.environment}`, bindings }, {
      controllers: [LoaderController],
      providers: [
        { provide: LOADER_CONFIG, useValue: config },
        { provide: TargetDatabase, useFactory: () => new TargetDatabase(config.targetDatabaseUrl) },
        LoaderService,
        {
          provide: DatabaseReadiness,
          useFactory: (readiness: ReadinessService, database: TargetDatabase) => new DatabaseReadiness(readiness, 'target-database', database.pool),
          inject: [ReadinessService, TargetDatabase],
        },
      ],
    });
  }
}
