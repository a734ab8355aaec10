import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AppFleet } from './support/apps';
import { createDatabase, type TestDatabase } from './support/databases';
import { EventCollector, natsNamespace, type NatsNamespace, plainPublish } from './support/nats';

const FIXTURE = join(__dirname, 'fixtures', 'pagila-like');
const fixture = (name: string) => readFileSync(join(FIXTURE, name), 'utf8');
const ENVIRONMENTS = ['dev', 'qa'];

/**
 * A realistic public sample schema nobody on this team designed (a DVD-rental schema modelled on
 * Pagila, see test/fixtures/pagila-like/schema.sql), refreshed by the real apps into stale
 * environments that carry their own audit trigger and sequences far ahead of production's.
 */
describe('refreshing a Pagila-like DVD-rental schema', () => {
  const fleet = new AppFleet();
  const targets: Record<string, TestDatabase> = {};
  const triggersBefore: Record<string, string[]> = {};
  let source: TestDatabase;
  let namespace: NatsNamespace;
  let events: EventCollector;
  let snapshotDir: string;

  /** Every relation a user can read: tables (and partitions), views and materialized views. */
  const relations = async (db: TestDatabase) =>
    (
      await db.query<{ name: string }>(
        `SELECT format('%I.%I', n.nspname, c.relname) AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm') AND c.relname <> 'env_audit' ORDER BY 1`,
      )
    ).map((r) => r.name);
  const rowsOf = async (db: TestDatabase, relation: string) => (await db.query<{ row: string }>(`SELECT t::text AS row FROM ${relation} t ORDER BY 1`)).map((r) => r.row);
  const sequencesOf = async (db: TestDatabase) => {
    const names = await db.query<{ name: string }>(
      `SELECT format('%I.%I', n.nspname, c.relname) AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'S' AND n.nspname = 'public' AND c.relname <> 'env_audit_id_seq' ORDER BY 1`,
    );
    const states: string[] = [];
    for (const { name } of names) states.push(`${name} ${(await db.query<{ s: string }>(`SELECT last_value || ' ' || is_called AS s FROM ${name}`))[0].s}`);
    return states;
  };
  const triggerStates = async (db: TestDatabase) =>
    (await db.query<{ t: string }>(`SELECT tgrelid::regclass::text || ' ' || tgname || ' ' || tgenabled::text AS t FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1`)).map(
      (r) => r.t,
    );

  beforeAll(async () => {
    source = await createDatabase('pagila_prod', fixture('schema.sql') + fixture('production-data.sql'));
    for (const env of ENVIRONMENTS) {
      targets[env] = await createDatabase(`pagila_${env}`, fixture('schema.sql') + fixture('stale-environment.sql'));
      triggersBefore[env] = await triggerStates(targets[env]);
    }
    snapshotDir = mkdtempSync(join(tmpdir(), 'db-fanout-pagila-'));
    namespace = natsNamespace('pagila');
    events = await EventCollector.start(namespace);
    const common = { ...namespace.env, SNAPSHOT_DIR: snapshotDir, RETRY_DELAY: '500ms' };
    await fleet.start('dumper', { ...common, SOURCE_DATABASE_URL: source.url });
    for (const env of ENVIRONMENTS) await fleet.start('loader', { ...common, TARGET_DATABASE_URL: targets[env].url, LOADER_ENV: env }, `loader-${env}`);
    await plainPublish(`${namespace.prefix}replication.trigger`, JSON.stringify({ date: '2024-07-01' }), undefined, namespace.url);
    await events.waitFor(
      'every environment to load',
      (c) => ENVIRONMENTS.every((env) => c.of('snapshot.loaded').some((e) => e.environment === env)) || c.of('snapshot.load.failed').length > 0,
      90_000,
    );
  }, 180_000);

  afterAll(async () => {
    await fleet.stopAll();
    await events?.stop();
    await namespace?.cleanup().catch(() => undefined);
    await Promise.all([source, ...Object.values(targets)].filter(Boolean).map((db) => db.drop()));
    if (snapshotDir) rmSync(snapshotDir, { recursive: true, force: true });
  });

  it('loads everywhere without a failure', () => {
    expect(events.of('snapshot.load.failed')).toEqual([]);
    expect(events.of('snapshot.loaded').map((e) => e.environment).sort()).toEqual(ENVIRONMENTS);
  });

  it.each(ENVIRONMENTS)('%s: every table, partition, view and materialized view equals production', async (env) => {
    const names = await relations(source);
    expect(names).toEqual(expect.arrayContaining(['public.payment', 'public.payment_p2022_02', 'public.customer_list', 'public.rental_by_category']));
    expect(await relations(targets[env])).toEqual(names);
    for (const name of names) {
      const production = await rowsOf(source, name);
      expect(production.length).toBeGreaterThan(0);
      expect({ [name]: await rowsOf(targets[env], name) }).toEqual({ [name]: production });
    }
  });

  it.each(ENVIRONMENTS)("%s: every sequence equals production's (none of them is owned by a column)", async (env) => {
    const owned = await source.query(`SELECT 1 FROM pg_depend WHERE classid = 'pg_class'::regclass AND refclassid = 'pg_class'::regclass AND deptype IN ('a', 'i')
      AND objid IN (SELECT oid FROM pg_class WHERE relkind = 'S')`);
    expect(owned).toEqual([]);
    const production = await sequencesOf(source);
    expect(production).toHaveLength(13);
    expect(await sequencesOf(targets[env])).toEqual(production);
  });

  it.each(ENVIRONMENTS)("%s: the environment's triggers are enabled as before and did not fire for loaded rows", async (env) => {
    expect(await triggerStates(targets[env])).toEqual(triggersBefore[env]);
    expect(triggersBefore[env]).toEqual(expect.arrayContaining(['customer env_audit O', 'payment env_audit O', 'film film_fulltext_trigger O']));
    expect(await targets[env].query('SELECT * FROM public.env_audit')).toEqual([]);
  });

  it('the environment keeps working: its next insert gets the id after production and its trigger fires', async () => {
    const dev = targets.dev;
    const [inserted] = await dev.query<{ customer_id: number }>(
      `INSERT INTO public.customer (store_id, first_name, last_name, address_id) VALUES (1, 'NEW', 'CUSTOMER', 1) RETURNING customer_id`,
    );
    expect(inserted.customer_id).toBe(401);
    expect(await dev.query('SELECT table_name FROM public.env_audit')).toEqual([{ table_name: 'customer' }]);
  });
});
