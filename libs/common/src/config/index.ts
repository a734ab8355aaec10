export * from './app-config';
export * from './config-variables';
export * from './duration';
export * from './env-reader';
