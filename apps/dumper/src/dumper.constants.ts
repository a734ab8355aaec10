export const DUMPER_CONFIG = Symbol('DUMPER_CONFIG');
