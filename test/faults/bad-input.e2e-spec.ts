import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AppFleet, type RunningApp } from '../support/apps';
import { consumerBacklog } from '../support/consumers';
import { createDatabase, contentAndSequences, type TestDatabase } from '../support/databases';
import { DEMO_TABLES, SCHEMA_SQL, SEED_SQL, STALE_SQL } from '../support/fixtures';
import { EventCollector, natsNamespace, plainPublish } from '../support/nats';

/** Bad messages are rejected with one clear line, never redelivered forever, and change nothing. */
describe('bad messages on every subject the apps consume', () => {
  const namespace = natsNamespace('badinput');
  const fleet = new AppFleet();
  const snapshotDir = mkdtempSync(join(tmpdir(), 'db-fanout-badinput-'));
  let source: TestDatabase;
  let dev: TestDatabase;
  let events: EventCollector;
  let dumper: RunningApp;
  let loader: RunningApp;
  let good: Record<string, unknown>;

  beforeAll(async () => {
    source = await createDatabase('badinput_prod', SCHEMA_SQL + SEED_SQL);
    dev = await createDatabase('badinput_dev', SCHEMA_SQL + STALE_SQL);
    events = await EventCollector.start(namespace);
    const common = { ...namespace.env, SNAPSHOT_DIR: snapshotDir, RETRY_DELAY: '10m', START_DATE: '2024-01-01' };
    dumper = await fleet.start('dumper', { ...common, SOURCE_DATABASE_URL: source.url });
    // A real snapshot to forge messages from, then a loader that only sees the forgeries.
    await plainPublish(`${namespace.prefix}replication.trigger`, '{"date":"2024-01-03"}');
    await events.waitFor('a real snapshot', (c) => c.of('snapshot.ready').length === 1);
    good = events.of('snapshot.ready')[0];
    await plainPublish(`${namespace.prefix}replication.trigger`, '{"date":"2024-01-04"}');
    await events.waitFor('a second snapshot', (c) => c.of('snapshot.ready').length === 2);
    loader = await fleet.start('loader', { ...common, TARGET_DATABASE_URL: dev.url, LOADER_ENV: 'dev' }, 'loader-dev');
    await events.waitFor('dev to load the latest snapshot', (c) => c.of('snapshot.loaded').length === 1);
  });

  afterAll(async () => {
    await fleet.stopAll();
    await events?.stop();
    await namespace.cleanup();
    await Promise.all([source, dev].filter(Boolean).map((db) => db.drop()));
    rmSync(snapshotDir, { recursive: true, force: true });
  });

  it('rejects bad triggers: not JSON, wrong types, unknown fields, impossible and pre-START_DATE dates', async () => {
    const bad: [string, string][] = [
      ['not json {', 'body is not JSON'],
      ['"2024-01-05"', 'trigger must be a JSON object'],
      ['{"date":20240105}', 'trigger.date must be a non-empty string'],
      ['{"date":"2024-02-30"}', 'trigger.date is not a calendar date YYYY-MM-DD: "2024-02-30"'],
      ['{"date":"2024-1-5"}', 'trigger.date is not a calendar date YYYY-MM-DD: "2024-1-5"'],
      ['{"date":"2023-12-31"}', 'trigger date 2023-12-31 is before START_DATE 2024-01-01'],
      ['{"date":"2024-01-05","force":true}', 'trigger has unknown field(s): force'],
    ];
    for (const [body] of bad) await plainPublish(`${namespace.prefix}replication.trigger`, body);
    await waitForLines(dumper, bad.map(([, line]) => line));
    await expectSettled('dumper');
    expect(events.of('snapshot.ready')).toHaveLength(2);
    expect(events.of('snapshot.failed')).toEqual([]);
    expect(await dumper.health()).toBe(200);
  });

  it('rejects forged snapshot.ready messages, including paths outside SNAPSHOT_DIR and SQL in names', async () => {
    const before = await contentAndSequences(dev, DEMO_TABLES);
    const tables = good.tables as Record<string, unknown>[];
    symlinkSync('/etc', join(snapshotDir, 'prod_snapshot_link'));
    const forged: [unknown, string][] = [
      ['{}', 'snapshot.ready.snapshotId must be a non-empty string'],
      [{ ...good, tables: 'all' }, 'snapshot.ready.tables must be a non-empty array'],
      [{ ...good, date: '2024-13-01' }, 'snapshot.ready.date is not a calendar date YYYY-MM-DD: "2024-13-01"'],
      [{ ...good, extra: 1 }, 'snapshot.ready has unknown field(s): extra'],
      [{ ...good, snapshotId: "x'; DROP TABLE customers; --" }, 'is not a snapshot id'],
      [{ ...good, location: '/etc' }, 'location "/etc" is not a snapshot directory inside SNAPSHOT_DIR'],
      [{ ...good, location: `${snapshotDir}/../prod_snapshot_x` }, `location "${snapshotDir}/../prod_snapshot_x" is not a snapshot directory`],
      [{ ...good, location: join(snapshotDir, 'prod_snapshot_link') }, 'leads outside SNAPSHOT_DIR'],
      [{ ...good, tables: [{ ...tables[0], file: '../../etc/passwd' }] }, 'must be a plain file name inside the snapshot'],
      [{ ...good, tables: [{ ...tables[0], sha256: 'zz' }, ...tables.slice(1)] }, 'is not a hex SHA-256 digest'],
      [{ ...good, tables: [{ ...tables[0], rows: -1 }, ...tables.slice(1)] }, 'rows must be a whole number >= 0'],
    ];
    for (const [body] of forged) {
      await plainPublish(`${namespace.prefix}snapshot.ready`, typeof body === 'string' ? body : JSON.stringify(body));
    }
    await waitForLines(loader, forged.map(([, line]) => line));

    // A well-formed message whose table name carries SQL: the manifest disagrees, nothing runs.
    const injected = { ...good, tables: [{ ...tables[0], name: 'public.customers; DROP TABLE public.products; --' }, ...tables.slice(1)] };
    await plainPublish(`${namespace.prefix}snapshot.ready`, JSON.stringify(injected));
    await events.waitFor('the injected message to fail', (c) => c.of('snapshot.load.failed').length === 1);
    expect(events.of('snapshot.load.failed')[0]).toMatchObject({ environment: 'dev', attempts: 1 });
    expect(String(events.of('snapshot.load.failed')[0].error)).toContain('does not match the message for table public.customers; DROP TABLE');

    await expectSettled('loader-dev');
    expect(events.of('snapshot.loaded')).toHaveLength(1);
    expect(await contentAndSequences(dev, DEMO_TABLES)).toEqual(before);
    expect(await loader.health()).toBe(200);
  });

  async function waitForLines(app: RunningApp, lines: string[]): Promise<void> {
    const deadline = Date.now() + 20_000;
    while (lines.some((line) => !app.output.includes(line))) {
      if (Date.now() > deadline) {
        throw new Error(`${app.name} never logged: ${lines.filter((l) => !app.output.includes(l)).join(' | ')}\n${app.output}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    for (const line of lines) {
      const matching = app.output.split('\n').filter((l) => l.includes(line));
      expect({ line, logged: matching.length }).toEqual({ line, logged: 1 });
      expect(matching[0]).toMatch(/WARN .*rejected /);
    }
  }

  /** The broker holds nothing more for the consumer (terminations are asynchronous: bounded wait). */
  async function expectSettled(durable: string): Promise<void> {
    const settled = { pending: 0, unacked: 0, redelivered: 0 };
    let backlog = await consumerBacklog(namespace.stream, durable);
    for (let i = 0; i < 20 && JSON.stringify(backlog) !== JSON.stringify(settled); i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      backlog = await consumerBacklog(namespace.stream, durable);
    }
    expect(backlog).toEqual(settled);
  }
});
