export * from './digest-stream';
export * from './coalescing-stream';
