export * from './compression';
export * from './fs-snapshot-store';
export * from './nats-snapshot-store';
export * from './open-snapshot-store';
export * from './s3-snapshot-store';
export * from './snapshot-directory';
export * from './snapshot-store';
