export * from './digest-stream';
