import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from 'pg';
import { TargetDatabase } from '../../apps/loader/src/database/target-database';
import { LEDGER_TABLE } from '../../apps/loader/src/ledger';
import { consumerBacklog, useUpDeliveries } from '../support/consumers';
import { contentAndSequences, tableContent } from '../support/databases';
import { DEMO_TABLES } from '../support/fixtures';
import { appSessions, loaderSessions, PipelineHarness, slowLoadSql, until } from '../support/pipeline';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The dumper killed while it is really streaming a table out of COPY, not while it waits for something. */
describe('the dumper killed in the middle of its COPY', () => {
  const ROWS = 1_500_000;
  const DUMPER_ENV = { TABLES: 'public.big' };
  let pipeline: PipelineHarness;

  beforeAll(async () => {
    pipeline = await PipelineHarness.create('crashdump', { environments: [], env: { ACK_WAIT: '2s' } });
    // About 310 MB of CSV: its COPY takes over a second (1.1 s measured), and the kill comes after the first few MB.
    await pipeline.source.query(
      `CREATE TABLE public.big (id int PRIMARY KEY, pad text); INSERT INTO public.big SELECT g, repeat('x', 200) FROM generate_series(1, ${ROWS}) g;`,
    );
  }, 120_000);
  afterAll(() => pipeline?.cleanup());

  const snapshotDirs = () => readdirSync(pipeline.snapshotDir);

  /** Size of every .csv in the date's temporary snapshot directories (tolerating a rename under our feet). */
  const partialCsvs = (compactDate: string): { path: string; bytes: number }[] =>
    snapshotDirs()
      .filter((name) => name.startsWith(`.tmp-prod_snapshot_${compactDate}-`))
      .flatMap((name) => {
        try {
          const dir = join(pipeline.snapshotDir, name);
          return readdirSync(dir)
            .filter((file) => file.endsWith('.csv'))
            .map((file) => ({ path: join(dir, file), bytes: statSync(join(dir, file)).size }));
        } catch {
          return [];
        }
      });

  it('kill -9 of the dumper mid-dump publishes nothing and leaves no final snapshot; the trigger completes after a restart', async () => {
    const dumper = await pipeline.startDumper(DUMPER_ENV);
    await pipeline.trigger('2024-02-01');

    // Kill it once the CSV has a few MB in it but the dump has not finished.
    const MIN_BYTES = 4 * 1024 * 1024;
    let killedAt: { path: string; bytes: number } | undefined;
    const deadline = Date.now() + 30_000;
    while (!killedAt) {
      if (pipeline.events.of('snapshot.ready').length > 0) throw new Error(`the dump finished before it could be killed inside its COPY (make public.big bigger):\n${dumper.output}`);
      if (Date.now() > deadline) throw new Error(`no CSV of ${MIN_BYTES} bytes appeared in 30 s:\n${dumper.output}`);
      killedAt = partialCsvs('20240201').find((csv) => csv.bytes > MIN_BYTES);
      if (killedAt) await dumper.kill();
      else await sleep(10);
    }

    await sleep(500);
    expect(pipeline.events.of('snapshot.ready')).toEqual([]);
    expect(snapshotDirs().filter((name) => name.startsWith('prod_snapshot_'))).toEqual([]);
    // Only the temporary directory is left, with a CSV cut off in the middle and no manifest.
    expect(existsSync(join(killedAt.path, '..', 'manifest.json'))).toBe(false);
    const cutOff = statSync(killedAt.path).size;

    await pipeline.startDumper(DUMPER_ENV, 'dumper-restarted');
    await pipeline.events.waitFor('the redelivered trigger to complete', (c) => c.of('snapshot.ready').length === 1);
    await sleep(2_500); // past ACK_WAIT: a trigger acked twice, or not at all, would show up here
    expect(pipeline.events.of('snapshot.ready')).toHaveLength(1);
    const ready = pipeline.readyFor('2024-02-01')!;
    expect(ready).toBeDefined();
    const manifest = JSON.parse(readFileSync(join(String(ready.location), 'manifest.json'), 'utf8')) as { tables: { name: string; rows: number; bytes: number }[] };
    expect(manifest.tables.map(({ name, rows }) => ({ name, rows }))).toEqual([{ name: 'public.big', rows: ROWS }]);
    // The killed dumper really was in the middle of its COPY: its file was shorter than the complete one.
    expect(cutOff).toBeGreaterThan(MIN_BYTES);
    expect(cutOff).toBeLessThan(manifest.tables[0].bytes);
  });
});

/** kill -9 and SIGTERM in the middle of the work: nothing is lost, nothing is half-loaded. */
describe('processes killed in the middle of their work', () => {
  let pipeline: PipelineHarness;

  beforeAll(async () => {
    pipeline = await PipelineHarness.create('crash', {
      environments: ['dev', 'qa'],
      // Loads into products take 3 s, after customers and categories are already in the transaction.
      targetSql: { dev: slowLoadSql('products', 3), qa: slowLoadSql('products', 3) },
      env: { ACK_WAIT: '2s' },
    });
    // The snapshot the loaders below load (and are killed or stopped in the middle of).
    await pipeline.startDumper();
    await pipeline.trigger('2024-02-01');
    await pipeline.events.waitFor('the snapshot to be ready', (c) => c.of('snapshot.ready').length === 1);
  });
  afterAll(() => pipeline?.cleanup());

  it('kill -9 of a loader mid-COPY leaves the previous data visible; after a restart it loads exactly once', async () => {
    const dev = pipeline.targets.dev;
    const before = await contentAndSequences(dev, DEMO_TABLES);
    const loader = await pipeline.startLoader('dev');
    await until('the dev load to be inside its COPY', async () => (await loaderSessions(dev)).some((s) => s.wait_event === 'PgSleep'));
    await loader.kill();
    // Right after the kill: still the previous data (PostgreSQL rolls the transaction back).
    expect(await contentAndSequences(dev, DEMO_TABLES)).toEqual(before);
    expect(pipeline.loadedIn('dev')).toEqual([]);

    await pipeline.startLoader('dev', {}, 'loader-dev-restarted');
    await pipeline.events.waitFor('dev to load after the restart', () => pipeline.loadedIn('dev').length === 1);
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    expect(pipeline.loadedIn('dev')).toHaveLength(1);
    for (const table of DEMO_TABLES) expect(await tableContent(dev, table)).toEqual(await tableContent(pipeline.source, table));
  });

  it('SIGTERM during a load lets it commit, exits 0, and nothing is loaded twice after a restart', async () => {
    const qa = pipeline.targets.qa;
    const loader = await pipeline.startLoader('qa');
    await until('the qa load to be inside its COPY', async () => (await loaderSessions(qa)).some((s) => s.wait_event === 'PgSleep'));
    expect(await loader.stop()).toBe(0);
    expect(loader.output).toContain('SIGTERM: finishing in-flight work, then exiting');

    const ledger = await qa.query<{ snapshot_id: string }>('SELECT snapshot_id FROM db_fanout.loaded_snapshots');
    expect(ledger).toHaveLength(1);
    for (const table of DEMO_TABLES) expect(await tableContent(qa, table)).toEqual(await tableContent(pipeline.source, table));
    await pipeline.events.waitFor('qa loaded', () => pipeline.loadedIn('qa').length === 1);

    await pipeline.startLoader('qa', {}, 'loader-qa-restarted');
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    expect(pipeline.loadedIn('qa')).toHaveLength(1);
    expect(await qa.query('SELECT snapshot_id FROM db_fanout.loaded_snapshots')).toHaveLength(1);
  });
});

/**
 * An app's transaction holds a table of the snapshot (a report, a session left idle in transaction):
 * the load waits for its ACCESS EXCLUSIVE lock. One LOCK under the session's 60 s lock_timeout kept
 * a SIGTERM waiting for up to a minute, past docker's grace period.
 */
describe("a loader stopped while its load waits for a table an app holds", () => {
  let pipeline: PipelineHarness;
  let app: Client | undefined;

  beforeAll(async () => {
    pipeline = await PipelineHarness.create('tablelock', { environments: ['qa'] });
  });
  afterAll(async () => {
    await app?.end().catch(() => undefined);
    await pipeline?.cleanup();
  });

  it('exits 0 within seconds, the environment unchanged; the snapshot is handed back and loads once after a restart', async () => {
    const qa = pipeline.targets.qa;
    await pipeline.startDumper();
    await pipeline.trigger('2024-04-01');
    await pipeline.events.waitFor('the snapshot', (c) => c.of('snapshot.ready').length === 1);
    const before = await contentAndSequences(qa, DEMO_TABLES);
    app = new Client({ connectionString: qa.url, application_name: 'report' });
    await app.connect();
    await app.query('BEGIN; SELECT count(*) FROM customers');

    const loader = await pipeline.startLoader('qa');
    await until('the load to wait for its tables', async () =>
      (await loaderSessions(qa)).some((session) => session.wait_event === 'relation' && session.query.includes('IN ACCESS EXCLUSIVE MODE')),
    );
    await sleep(1_500);
    const stoppedAt = Date.now();
    // Bounded past the old minute, so that a stop that waits it out fails on its duration, not on a SIGKILL.
    expect(await loader.stop(90_000)).toBe(0);
    expect(Date.now() - stoppedAt).toBeLessThan(10_000);
    expect(await contentAndSequences(qa, DEMO_TABLES)).toEqual(before);
    expect(pipeline.events.of('snapshot.load.failed')).toEqual([]);
    expect(pipeline.loadedIn('qa')).toEqual([]);

    await app.query('ROLLBACK');
    await pipeline.startLoader('qa', {}, 'loader-qa-restarted');
    await pipeline.events.waitFor('qa loaded after the restart', () => pipeline.loadedIn('qa').length === 1, 60_000);
    for (const table of DEMO_TABLES) expect(await tableContent(qa, table)).toEqual(await tableContent(pipeline.source, table));
  }, 180_000);
});

/**
 * The dumper stopped while its dump waits for a table production holds (the same for a long COPY):
 * the attempt ends at once, where it ran on to its 60 s lock_timeout (or the whole dump), past the
 * orchestrator's grace period.
 */
describe('the dumper stopped while its dump waits for a table production holds', () => {
  let pipeline: PipelineHarness;
  let app: Client | undefined;

  beforeAll(async () => {
    pipeline = await PipelineHarness.create('dumpstop', { environments: [], env: { ACK_WAIT: '2s' } });
  });
  afterAll(async () => {
    await app?.query('ROLLBACK').catch(() => undefined);
    await app?.end().catch(() => undefined);
    await pipeline?.cleanup();
  });

  it('exits 0 within seconds, leaves no snapshot and no session in production; the trigger is handed back and dumps once after a restart', async () => {
    const dumper = await pipeline.startDumper();
    app = new Client({ connectionString: pipeline.source.url, application_name: 'report' });
    await app.connect();
    await app.query('BEGIN; LOCK TABLE customers IN ACCESS EXCLUSIVE MODE');
    await pipeline.trigger('2024-05-01');
    await until('the dump to wait for the lock', async () => (await pipeline.source.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'db-fanout-dumper' AND wait_event_type = 'Lock'",
    ))[0].n > 0);
    await sleep(1_500);
    const stoppedAt = Date.now();
    // Bounded past the old minute, so that a stop that waits it out fails on its duration, not on a SIGKILL.
    expect(await dumper.stop(90_000)).toBe(0);
    expect(Date.now() - stoppedAt).toBeLessThan(10_000);
    expect(dumper.output).toContain('SIGTERM during the dump of 2024-05-01: this attempt ends, the trigger is handed back');
    expect(dumper.output).not.toContain('lock timeout');
    // Nothing for a loader, not even a temporary directory; no outcome published.
    expect(readdirSync(pipeline.snapshotDir)).toEqual([]);
    expect(pipeline.events.of('snapshot.ready')).toEqual([]);
    expect(pipeline.events.of('snapshot.failed')).toEqual([]);
    // The server ended the dump's session (the app still holds its lock): nothing of the dump's holds production.
    await until('the dump\'s sessions to end', async () => (await appSessions(pipeline.source, 'dumper')).length === 0, 5_000);
    // Handed back, not acked.
    const backlog = await consumerBacklog(pipeline.namespace.stream, 'dumper');
    expect(backlog.pending + backlog.unacked).toBe(1);

    await app.query('ROLLBACK');
    await pipeline.startDumper({}, 'dumper-restarted');
    await pipeline.events.waitFor('the handed-back trigger to complete', (c) => c.of('snapshot.ready').length === 1, 60_000);
    await sleep(2_500); // past ACK_WAIT: a trigger acked twice, or not at all, would show up here
    expect(pipeline.events.of('snapshot.ready')).toHaveLength(1);
    expect(pipeline.readyFor('2024-05-01')).toBeDefined();
    expect(pipeline.events.of('snapshot.failed')).toEqual([]);
    expect(await consumerBacklog(pipeline.namespace.stream, 'dumper')).toMatchObject({ pending: 0, unacked: 0 });
  }, 180_000);
});

/**
 * A message's last delivery (max_deliver 10) ended by a stop: handed back, the broker would drop it
 * and nobody would say that the snapshot never reached the environment, or the day was never dumped.
 */
describe('a stop during the last delivery the consumer allows', () => {
  let pipeline: PipelineHarness;
  const held: Client[] = [];

  beforeAll(async () => {
    pipeline = await PipelineHarness.create('lastdelivery', { environments: ['qa'], env: { RETRY_DELAY: '1m' } });
  });
  afterAll(async () => {
    await Promise.all(held.map((client) => client.end().catch(() => undefined)));
    await pipeline?.cleanup();
  });

  /** A session holding `lockSql` open in a transaction until the test file ends. */
  async function hold(url: string, lockSql: string): Promise<void> {
    const client = new Client({ connectionString: url });
    await client.connect();
    held.push(client);
    await client.query(`BEGIN; ${lockSql}`);
  }

  it('the dumper, stopped while it waits to retry, reports snapshot.failed instead of losing the trigger', async () => {
    // The consumer exists (the dumper made it) before the trigger is published; nothing is dumped yet.
    await (await pipeline.startDumper({}, 'dumper-first')).stop();
    await pipeline.trigger('2024-03-01');
    await useUpDeliveries(pipeline.namespace, 'dumper');
    // The dump waits for a table production holds exclusively; its session is then ended by an
    // administrator (a transient error), and the dumper waits a minute to retry.
    await hold(pipeline.source.url, 'LOCK TABLE customers IN ACCESS EXCLUSIVE MODE');
    const dumper = await pipeline.startDumper();
    await until('the dump to wait for the lock', async () => (await appSessions(pipeline.source, 'dumper')).some((session) => session.wait_event === 'relation'));
    await pipeline.source.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'db-fanout-dumper' AND wait_event = 'relation'");
    await until('the dump to wait for its retry', () => dumper.output.includes('retrying in 1m'));
    expect(await dumper.stop()).toBe(0);

    await pipeline.events.waitFor('snapshot.failed', (c) => c.of('snapshot.failed').length === 1);
    expect(pipeline.events.of('snapshot.failed')[0]).toMatchObject({
      date: '2024-03-01',
      code: 'stopped-on-last-delivery',
      attempts: 1,
      error: expect.stringContaining('delivery 10, the last the consumer allows (max_deliver 10)'),
    });
    expect(await consumerBacklog(pipeline.namespace.stream, 'dumper')).toMatchObject({ pending: 0, unacked: 0 });
  });

  it('a loader, stopped while it waits for the ledger, reports snapshot.load.failed instead of losing the snapshot', async () => {
    await held.splice(0).reduce((done, client) => done.then(() => client.end()), Promise.resolve());
    await (await pipeline.startLoader('qa', {}, 'loader-first')).stop();
    await pipeline.startDumper({}, 'dumper-second');
    await pipeline.trigger('2024-03-02');
    await pipeline.events.waitFor('the snapshot', (c) => c.of('snapshot.ready').length === 1);
    await useUpDeliveries(pipeline.namespace, 'loader-qa');
    const before = await contentAndSequences(pipeline.targets.qa, DEMO_TABLES);
    // Another load (as far as this loader can tell) holds the ledger.
    const ledger = new TargetDatabase(pipeline.targets.qa.url);
    await ledger.ensureLedger();
    await ledger.close();
    await hold(pipeline.targets.qa.url, `LOCK TABLE ${LEDGER_TABLE} IN SHARE ROW EXCLUSIVE MODE`);
    const loader = await pipeline.startLoader('qa');
    await until('the load to wait for the ledger', async () => (await loaderSessions(pipeline.targets.qa)).some((session) => session.wait_event === 'relation'));
    expect(await loader.stop()).toBe(0);

    await pipeline.events.waitFor('snapshot.load.failed', (c) => c.of('snapshot.load.failed').length === 1);
    expect(pipeline.events.of('snapshot.load.failed')[0]).toMatchObject({
      environment: 'qa',
      code: 'stopped-on-last-delivery',
      attempts: 1,
      error: expect.stringContaining('delivery 10, the last the consumer allows (max_deliver 10)'),
    });
    expect(await consumerBacklog(pipeline.namespace.stream, 'loader-qa')).toMatchObject({ pending: 0, unacked: 0 });
    expect(await contentAndSequences(pipeline.targets.qa, DEMO_TABLES)).toEqual(before);
  });

  it('the dumper, stopped while its dump waits for a table production holds, reports snapshot.failed and writes no snapshot', async () => {
    await held.splice(0).reduce((done, client) => done.then(() => client.end()), Promise.resolve());
    // No dumper of the tests before takes the trigger; one started and stopped makes the consumer.
    await pipeline.fleet.stopAll();
    await (await pipeline.startDumper({}, 'dumper-before-last')).stop();
    await pipeline.trigger('2024-03-03');
    await useUpDeliveries(pipeline.namespace, 'dumper');
    const announced = pipeline.events.of('snapshot.ready').length;
    await hold(pipeline.source.url, 'LOCK TABLE customers IN ACCESS EXCLUSIVE MODE');
    const dumper = await pipeline.startDumper({}, 'dumper-last');
    await until('the dump to wait for the lock', async () => (await appSessions(pipeline.source, 'dumper')).some((session) => session.wait_event === 'relation'));
    expect(await dumper.stop()).toBe(0);

    await pipeline.events.waitFor('snapshot.failed for 2024-03-03', (c) => c.of('snapshot.failed').some((event) => event.date === '2024-03-03'));
    expect(pipeline.events.of('snapshot.failed').filter((event) => event.date === '2024-03-03')).toEqual([
      expect.objectContaining({ code: 'stopped-on-last-delivery', attempts: 1, error: expect.stringContaining('the dump of 2024-03-03 was interrupted') }),
    ]);
    expect(pipeline.events.of('snapshot.ready')).toHaveLength(announced);
    expect(pipeline.readyFor('2024-03-03')).toBeUndefined();
    // Not a snapshot of the date, not even an interrupted one's leftovers.
    expect(readdirSync(pipeline.snapshotDir).filter((name) => name.includes('20240303'))).toEqual([]);
    expect(await consumerBacklog(pipeline.namespace.stream, 'dumper')).toMatchObject({ pending: 0, unacked: 0 });
  });
});
