import type { RunningApp } from './support/apps';
import { runCli as cli } from './support/cli';
import { tableContent } from './support/databases';
import { PipelineHarness, until } from './support/pipeline';

interface Step {
  state: string;
  snapshotId?: string;
  drift?: { skippedTables: string[]; leftOutColumns: string[]; defaultedColumns: string[]; unsetSequences?: string[] };
}
interface Run {
  date: string;
  loads: Record<string, Step>;
}

/**
 * SCHEMA_DRIFT=common-columns end to end: an environment whose schema drifted from production (a
 * column and a table it lacks, a column of its own) loads what both have, and what it left out is
 * reported in snapshot.loaded, the run history (GET /api/runs, `db-fanout runs --json`) and `db-fanout status`.
 */
describe('SCHEMA_DRIFT=common-columns through the pipeline', () => {
  let pipeline: PipelineHarness;
  let scheduler: RunningApp;
  const drift = {
    skippedTables: ['"Sales"."Order Items"'],
    leftOutColumns: ['public.products."attrs"'],
    defaultedColumns: ['public.customers."region"'],
    // The skipped table's bigserial, dropped with it: no loaded column draws from it.
    unsetSequences: ['"Sales"."Order Items_Id_seq"'],
  };

  beforeAll(async () => {
    pipeline = await PipelineHarness.create('schemadrift', {
      environments: ['qa'],
      targetSql: {
        // Stale rows hold 'stale': after the load every row must hold the column's default.
        qa: `ALTER TABLE public.products DROP COLUMN attrs;
             DROP TABLE "Sales"."Order Items";
             ALTER TABLE public.customers ADD COLUMN region text;
             UPDATE public.customers SET region = 'stale';
             ALTER TABLE public.customers ALTER COLUMN region SET DEFAULT 'eu';`,
      },
    });
    scheduler = await pipeline.fleet.start('scheduler', { ...pipeline.commonEnv, SCHEDULE: '0 0 1 1 *' });
    await pipeline.startDumper();
    await pipeline.startLoader('qa', { SCHEMA_DRIFT: 'common-columns' });
  }, 60_000);
  afterAll(() => pipeline?.cleanup());

  it('loads the common columns, and reports what it left out in snapshot.loaded, GET /api/runs and the CLI', async () => {
    const { source, targets, events } = pipeline;
    await pipeline.trigger('2024-08-01');
    await events.waitFor('qa to load', () => pipeline.loadedIn('qa').length === 1 || events.of('snapshot.load.failed').length > 0);
    expect(events.of('snapshot.load.failed')).toEqual([]);
    const [loaded] = pipeline.loadedIn('qa');
    expect(loaded.drift).toEqual(drift);

    // What both have is production's; the environment's own column took its default.
    const products = 'SELECT id, sku, category_id, price, tags, photo FROM public.products ORDER BY id';
    expect(await targets.qa.query(products)).toEqual(await source.query(products));
    expect(await targets.qa.query('SELECT DISTINCT region FROM public.customers')).toEqual([{ region: 'eu' }]);
    expect(await tableContent(targets.qa, 'public.customers')).toHaveLength((await tableContent(source, 'public.customers')).length);
    // ANALYZE follows the load, on every table it loaded (the skipped one is not there to analyze:
    // naming it failed the whole statement, and no table was analyzed).
    const ready = events.of('snapshot.ready')[0] as { tables: { name: string }[] };
    const loadedTables = ready.tables.map((t) => t.name).filter((name) => !drift.skippedTables.includes(name));
    expect(loadedTables).toEqual(expect.arrayContaining(['public.products', 'public.customers']));
    const analyzed = async () =>
      (
        await targets.qa.query<{ name: string }>(
          "SELECT quote_ident(schemaname) || '.' || quote_ident(relname) AS name FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL",
        )
      ).map((r) => r.name);
    await until('ANALYZE of the loaded tables', async () => {
      const names = await analyzed();
      return loadedTables.every((name) => names.includes(name));
    });
    // The environment's ledger keeps it too (a late announcement of this load reports the same).
    expect(await targets.qa.query('SELECT snapshot_id, drift FROM db_fanout.loaded_snapshots')).toEqual([{ snapshot_id: loaded.snapshotId, drift }]);

    // The run history: the qa step of the run carries the same drift.
    let run: Run | undefined;
    await until('the run history to show the load', async () => {
      run = ((await (await fetch(`http://127.0.0.1:${scheduler.port}/api/runs`)).json()) as Run[]).find((r) => r.date === '2024-08-01');
      return run?.loads.qa?.state === 'success';
    });
    expect(run!.loads.qa).toMatchObject({ state: 'success', snapshotId: loaded.snapshotId, drift });

    const env = pipeline.namespace.env;
    const json = await cli(['runs', '--json'], env);
    expect(json.code).toBe(0);
    expect((JSON.parse(json.stdout) as Run[]).find((r) => r.date === '2024-08-01')?.loads.qa.drift).toEqual(drift);
    const status = await cli(['status'], env);
    expect(status.code).toBe(0);
    const [header, row] = status.stdout.trim().split('\n').map((line) => line.split(/ {2,}/));
    expect(header).toEqual(['date', 'dump', 'qa']);
    expect(row[0]).toBe('2024-08-01');
    expect(row[2]).toMatch(/^success \d+\.\ds, drift: 1 table skipped, 1 column left out, 1 column defaulted, 1 sequence left unset$/);
  }, 90_000);
});
