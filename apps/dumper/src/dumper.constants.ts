export const DUMPER_CONFIG = Symbol('DUMPER_CONFIG');

/** The store snapshots are written to (SNAPSHOT_STORE). */
export const SNAPSHOT_STORE = Symbol('SNAPSHOT_STORE');
