import { randomBytes } from 'node:crypto';
import { Client } from 'pg';
import { ADMIN_URL, tableContent, type TestDatabase } from './support/databases';
import { DEMO_TABLES } from './support/fixtures';
import { PipelineHarness } from './support/pipeline';

/** The URL of `db` for another role (trust authentication on the test server: no password). */
function as(role: string, db: TestDatabase): string {
  const url = new URL(db.url);
  url.username = role;
  url.password = '';
  return url.toString();
}

async function admin(sql: string): Promise<void> {
  const client = new Client({ connectionString: ADMIN_URL });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

/**
 * The whole pipeline with exactly the roles the README documents: a dumper role that can only read
 * (pg_read_all_data), and a loader role that owns its environment's tables and is no superuser.
 */
describe('least privilege', () => {
  const suffix = randomBytes(4).toString('hex');
  const dumperRole = `fanout_dumper_${suffix}`;
  const loaderRole = `fanout_loader_${suffix}`;
  let pipeline: PipelineHarness;

  beforeAll(async () => {
    pipeline = await PipelineHarness.create('leastpriv', {
      environments: ['dev'],
      // The environment's own trigger and a materialized view, so disabling triggers and refreshing
      // views run with the loader role's rights too.
      targetSql: {
        dev: `CREATE TABLE env_audit (at timestamptz DEFAULT now());
              CREATE FUNCTION env_audit_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO env_audit DEFAULT VALUES; RETURN NULL; END $$;
              CREATE TRIGGER env_audit AFTER INSERT ON customers FOR EACH ROW EXECUTE FUNCTION env_audit_row();
              CREATE MATERIALIZED VIEW customer_count AS SELECT count(*) AS n FROM customers;`,
      },
    });
    await admin(`CREATE ROLE ${dumperRole} LOGIN NOSUPERUSER; GRANT pg_read_all_data TO ${dumperRole};`);
    await admin(`CREATE ROLE ${loaderRole} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS`);
    const dev = pipeline.targets.dev;
    // The loader role owns the environment's tables (and so their sequences, triggers and indexes)
    // and its materialized views, may create the db_fanout ledger schema, and may create (rebuild)
    // indexes in the tables' schemas.
    await dev.query(`GRANT CREATE ON DATABASE "${dev.name}" TO ${loaderRole}; GRANT USAGE, CREATE ON SCHEMA public, "Sales" TO ${loaderRole};
      DO $$ DECLARE r record; BEGIN
        FOR r IN SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname IN ('public', 'Sales') AND c.relkind IN ('r', 'p', 'm', 'v') LOOP
          EXECUTE format('ALTER %s %I.%I OWNER TO ${loaderRole}', CASE r.relkind WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'v' THEN 'VIEW' ELSE 'TABLE' END, r.nspname, r.relname);
        END LOOP;
      END $$;`);
    // A report someone else owns, reading customers through a function: REFRESH needs its owner, so
    // the load leaves it to them rather than fail on it.
    await dev.query(`CREATE FUNCTION admin_customer_total() RETURNS bigint LANGUAGE sql STABLE AS 'SELECT count(*) FROM customers';
      CREATE MATERIALIZED VIEW admin_report AS SELECT admin_customer_total() AS n;`);
    const [{ superuser }] = await dev.query<{ superuser: boolean }>(`SELECT rolsuper AS superuser FROM pg_roles WHERE rolname = '${loaderRole}'`);
    expect(superuser).toBe(false);

    await pipeline.startDumper({ SOURCE_DATABASE_URL: as(dumperRole, pipeline.source) });
    await pipeline.startLoader('dev', { TARGET_DATABASE_URL: as(loaderRole, dev) });
  }, 120_000);

  afterAll(async () => {
    await pipeline?.cleanup();
    await admin(`DROP ROLE IF EXISTS ${loaderRole}; DROP ROLE IF EXISTS ${dumperRole}`).catch(() => undefined);
  });

  it('dumps as a read-only role and loads as a table-owning role that is no superuser', async () => {
    await pipeline.trigger('2024-08-01');
    await pipeline.events.waitFor('dev to load or fail', (c) => pipeline.loadedIn('dev').length === 1 || c.of('snapshot.load.failed').length + c.of('snapshot.failed').length > 0, 60_000);
    expect(pipeline.events.of('snapshot.failed')).toEqual([]);
    expect(pipeline.events.of('snapshot.load.failed')).toEqual([]);

    const dev = pipeline.targets.dev;
    for (const table of DEMO_TABLES) expect({ [table]: await tableContent(dev, table) }).toEqual({ [table]: await tableContent(pipeline.source, table) });
    expect(await dev.query('SELECT * FROM env_audit')).toEqual([]);
    expect(await dev.query<{ n: string }>('SELECT n::text AS n FROM customer_count')).toEqual(
      await pipeline.source.query<{ n: string }>('SELECT count(*)::text AS n FROM customers'),
    );
    expect(await dev.query(`SELECT pg_get_userbyid(nspowner) AS owner FROM pg_namespace WHERE nspname = 'db_fanout'`)).toEqual([{ owner: loaderRole }]);
    // The dumper's role really could not write.
    await expect(new PipelineProbe(as(dumperRole, pipeline.source)).run('DELETE FROM customers')).rejects.toThrow(/permission denied/);
  });
});

/** One statement as a given role. */
class PipelineProbe {
  constructor(private readonly url: string) {}
  async run(sql: string): Promise<void> {
    const client = new Client({ connectionString: this.url });
    await client.connect();
    try {
      await client.query(sql);
    } finally {
      await client.end();
    }
  }
}
