export * from './dotted-name';
export * from './rules-catalog';
export * from './rules-file';
export * from './rules-plan';
export * from './rules-suggest';
