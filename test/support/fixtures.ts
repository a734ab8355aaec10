import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const DEMO = join(__dirname, '..', '..', 'demo');

export const SCHEMA_SQL = readFileSync(join(DEMO, 'schema.sql'), 'utf8');
export const SEED_SQL = readFileSync(join(DEMO, 'seed.sql'), 'utf8');
export const STALE_SQL = readFileSync(join(DEMO, 'stale.sql'), 'utf8');

/** The demo's tables, quoted as SQL. */
export const DEMO_TABLES = ['public.customers', 'public.categories', 'public.products', '"Sales"."Order Items"'];
