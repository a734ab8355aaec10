import { type DynamicModule, Global, Module } from '@nestjs/common';
import { HealthController } from './health.controller';
import { MetricsController } from './metrics.controller';
import { MetricsService } from './metrics.service';
import { ReadinessService } from './readiness.service';

/**
 * What an operator looks at, for one app: GET /health (every part of the app sets its own readiness
 * check) and GET /metrics (Prometheus). Global, so messaging and database code can report readiness
 * and metrics without importing it. Logging is set up before the app exists (see createAppLogger).
 */
@Global()
@Module({})
export class ObservabilityModule {
  static forRoot(): DynamicModule {
    return {
      module: ObservabilityModule,
      controllers: [HealthController, MetricsController],
      providers: [ReadinessService, MetricsService],
      exports: [ReadinessService, MetricsService],
    };
  }
}
