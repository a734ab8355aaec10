export * from './database-readiness';
export * from './server-identity';
export * from './sql';
