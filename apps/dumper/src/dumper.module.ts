import { DynamicModule, Logger, Module } from '@nestjs/common';
import { serviceModule } from '@app/common/bootstrap';
import { type DumperConfig } from '@app/common/config';
import { SUBJECTS } from '@app/common/contract';
import { DatabaseReadiness } from '@app/common/database';
import { type ConsumerBinding, NATS_CONNECTION } from '@app/common/messaging';
import { openSnapshotStore } from '@app/common/snapshot-store';
import type { NatsConnection } from '@nats-io/transport-node';
import { ReadinessService } from '@app/common/observability';
import { DUMPER_CONFIG, SNAPSHOT_STORE } from './dumper.constants';
import { DumperController } from './dumper.controller';
import { DumperService } from './dumper.service';
import { SourceDatabase } from './source-database';

@Module({})
export class DumperModule {
  static forRoot(config: DumperConfig): DynamicModule {
    // Replicas of the dumper share one consumer: each trigger is dumped once.
    const trigger: ConsumerBinding = { pattern: SUBJECTS.trigger, durable: 'dumper', startAt: 'all', maxDeliver: 10 };
    return serviceModule(DumperModule, { config: config.nats, clientName: 'db-fanout-dumper', bindings: [trigger] }, {
      controllers: [DumperController],
      providers: [
        { provide: DUMPER_CONFIG, useValue: config },
        DumperService,
        {
          // The dumper creates the Object Store bucket (with SNAPSHOT_REPLICAS); a bucket it cannot create stops it at boot,
          // and so does an S3 bucket that does not exist (db-fanout makes none).
          provide: SNAPSHOT_STORE,
          useFactory: (connection: NatsConnection) =>
            openSnapshotStore(config.snapshotStore, connection, { create: true, replicas: config.snapshotReplicas, checkBucket: (warning) => new Logger('Dumper').warn(warning) }),
          inject: [NATS_CONNECTION],
        },
        { provide: SourceDatabase, useFactory: () => new SourceDatabase(config.sourceDatabaseUrl, config.dumpJobs) },
        {
          provide: DatabaseReadiness,
          // Probes through the dump's own pool: an idle session answers SELECT 1, no new connection every 5 s.
          useFactory: (readiness: ReadinessService, source: SourceDatabase) => new DatabaseReadiness(readiness, 'source-database', source),
          inject: [ReadinessService, SourceDatabase],
        },
      ],
    });
  }
}
