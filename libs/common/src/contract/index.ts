export * from './dates';
export * from './invalid-message.error';
export * from './manifest';
export * from './payloads';
export * from './subjects';
export * from './runs';
