export const LOADER_CONFIG = Symbol('LOADER_CONFIG');
