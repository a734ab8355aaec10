export * from './database-readiness';
export * from './postgres-pool';
export * from './server-identity';
export * from './sql';
export * from './partition-leaves';
export * from './lock-watch';
