import type { DynamicModule, Type } from '@nestjs/common';
import { JetStreamModule, type JetStreamModuleOptions } from '../messaging/jetstream.module';
import { ObservabilityModule } from '../observability/observability.module';

/** What an app module adds to the parts every service has. */
export type ServiceParts = Pick<DynamicModule, 'imports' | 'controllers' | 'providers'>;

/**
 * The root module of a service (scheduler, dumper, loader): health and metrics, the app's own
 * imports, then JetStream with the app's consumer bindings, then the app's controllers and providers.
 * One place, so the three services cannot drift apart in what they wire in.
 */
export function serviceModule(module: Type, messaging: JetStreamModuleOptions, parts: ServiceParts): DynamicModule {
  return {
    module,
    imports: [ObservabilityModule.forRoot(), ...(parts.imports ?? []), JetStreamModule.forRoot(messaging)],
    controllers: parts.controllers,
    providers: parts.providers,
  };
}
