export * from './run-app';
export * from './service-module';
