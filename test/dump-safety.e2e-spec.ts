import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { jetstream } from '@nats-io/jetstream';
import { connect as natsConnect } from '@nats-io/transport-node';
import { Client } from 'pg';
import { uniqueName } from './support/databases';
import { PipelineHarness, until } from './support/pipeline';
import { ofSubject, streamEvents } from './support/stream-events';

/**
 * A TCP hop to PostgreSQL that passes at most `bytesPerSecond` per connection towards the client:
 * a COPY that takes seconds, so a test can act while the dump is really in progress.
 */
class ThrottledProxy {
  private constructor(
    private readonly server: Server,
    private readonly sockets: Set<Socket>,
  ) {}

  static async start(target: { host: string; port: number }, bytesPerSecond: number): Promise<ThrottledProxy> {
    const sockets = new Set<Socket>();
    const server = createServer((client) => {
      const upstream = connect(target.port, target.host);
      for (const socket of [client, upstream]) {
        sockets.add(socket);
        socket.on('close', () => sockets.delete(socket));
        socket.on('error', () => socket.destroy());
      }
      client.pipe(upstream);
      upstream.on('data', (chunk: Buffer) => {
        client.write(chunk);
        upstream.pause();
        setTimeout(() => upstream.resume(), (chunk.length / bytesPerSecond) * 1000);
      });
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    return new ThrottledProxy(server, sockets);
  }

  url(databaseUrl: string): string {
    const url = new URL(databaseUrl);
    url.hostname = '127.0.0.1';
    url.port = String((this.server.address() as { port: number }).port);
    return url.toString();
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}


describe('DDL in production during a parallel dump', () => {
  let pipeline: PipelineHarness;
  let proxy: ThrottledProxy;
  const BYTES_PER_SECOND = 1024 * 1024;

  /** Bytes written so far into a table's CSV in the dump being written (.tmp-*), 0 if none yet. */
  const csvBytes = (table: string): number => {
    for (const dir of readdirSync(pipeline.snapshotDir).filter((name) => name.startsWith('.tmp-'))) {
      try {
        const file = readdirSync(join(pipeline.snapshotDir, dir)).find((name) => name.endsWith(`_${table}.csv`));
        if (file) return statSync(join(pipeline.snapshotDir, dir, file)).size;
      } catch {
        // renamed or removed under our feet
      }
    }
    return 0;
  };

  beforeAll(async () => {
    pipeline = await PipelineHarness.create('dumpddl', { environments: [], env: { DUMP_JOBS: '2', RETRIES: '2', RETRY_DELAY: '1s' } });
    // Sizes decide who dumps what (largest first): the leader takes big_a (about 16 s through the
    // proxy at 1 MB/s), the worker big_b (about 4 s) and then the small table the DDL is aimed at.
    await pipeline.source.query(`
      CREATE TABLE public.big_a (id int PRIMARY KEY, pad text); INSERT INTO public.big_a SELECT g, repeat('a', 200) FROM generate_series(1, 80000) g;
      CREATE TABLE public.big_b (id int PRIMARY KEY, pad text); INSERT INTO public.big_b SELECT g, repeat('b', 200) FROM generate_series(1, 20000) g;
      CREATE TABLE public.small (id int PRIMARY KEY, label text); INSERT INTO public.small SELECT g, 'row ' || g FROM generate_series(1, 50) g;
      ANALYZE;`);
    proxy = await ThrottledProxy.start({ host: '127.0.0.1', port: Number(new URL(pipeline.source.url).port || 5432) }, BYTES_PER_SECOND);
  }, 120_000);
  afterAll(async () => {
    await pipeline?.cleanup();
    await proxy?.stop();
  });

  it('a worker that meets a waiting ALTER TABLE ends the attempt at once; the ALTER completes, and a retry publishes a complete snapshot', async () => {
    const dumper = await pipeline.startDumper({ SOURCE_DATABASE_URL: proxy.url(pipeline.source.url), TABLES: 'public.big_a,public.big_b,public.small' });
    await pipeline.trigger('2024-03-01');
    // Watched from the file, not pg_stat_activity: the kernel's socket buffers let the server finish
    // its side of a COPY long before the throttled client has read it.
    await until('the worker to be writing big_b', () => csvBytes('public.big_b') > 0, 60_000).catch((error: unknown) => {
      throw new Error(`${String(error)}\ndumper:\n${dumper.output}`);
    });

    const production = new Client({ connectionString: pipeline.source.url });
    await production.connect();
    try {
      const ddlStarted = Date.now();
      const ddl = production.query('ALTER TABLE public.small ADD COLUMN added int').then(() => Date.now());
      // The ALTER really waits for the dump (the leader holds ACCESS SHARE on every table).
      await until('the ALTER to wait for the dump', async () => {
        const waiting = await pipeline.source.query(`SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'ALTER TABLE public.small%' AND wait_event_type = 'Lock'`);
        return waiting.length > 0;
      });
      const ddlDone = await ddl;
      await until('the first attempt to be reported failed', () => dumper.lines.some((l) => l.text.includes('failed on attempt 1')));
      const attemptEnded = dumper.lines.find((l) => l.text.includes('failed on attempt 1'))!.at;

      // Within seconds of the attempt's end, and far below the 60 s lock_timeout a stuck worker would wait.
      expect(ddlDone - attemptEnded).toBeLessThan(5_000);
      expect(ddlDone - ddlStarted).toBeLessThan(20_000);
      // The event and the log line travel separately (NATS, stdout): the line can arrive first.
      await until('the snapshot.dump.retrying event', () => pipeline.events.of('snapshot.dump.retrying').length > 0);
      const retrying = pipeline.events.of('snapshot.dump.retrying');
      expect(retrying[0]).toMatchObject({ attempt: 1, code: '55P03' });
      expect(String(retrying[0].error)).toContain('public.small');
    } finally {
      await production.end();
    }

    await pipeline.events.waitFor('a later attempt to publish the snapshot', (c) => c.of('snapshot.ready').length === 1, 90_000);
    const ready = pipeline.readyFor('2024-03-01')!;
    const manifest = JSON.parse(readFileSync(join(String(ready.location), 'manifest.json'), 'utf8')) as { tables: { name: string; rows: number; columns: string[] }[] };
    expect(manifest.tables.map(({ name, rows }) => ({ name, rows }))).toEqual([
      { name: 'public.big_a', rows: 80000 },
      { name: 'public.big_b', rows: 20000 },
      { name: 'public.small', rows: 50 },
    ]);
    expect(manifest.tables[2].columns).toEqual(['id', 'label', 'added']);
    expect(pipeline.events.of('snapshot.dump.started').map((e) => e.attempt)).toEqual([1, 2]);
  }, 180_000);
});

describe('a dump role that row-level security filters', () => {
  let pipeline: PipelineHarness;
  const role = uniqueName('dump_rls_e2e');

  beforeAll(async () => {
    pipeline = await PipelineHarness.create('dumprls', { environments: [], env: { RETRIES: '2' } });
    await pipeline.source.query(`
      CREATE ROLE ${role} LOGIN;
      GRANT USAGE ON SCHEMA public, "Sales" TO ${role};
      GRANT SELECT ON ALL TABLES IN SCHEMA public, "Sales" TO ${role};
      GRANT SELECT ON ALL SEQUENCES IN SCHEMA public, "Sales" TO ${role};
      ALTER TABLE public.customers ENABLE ROW LEVEL SECURITY;
      CREATE POLICY some_customers ON public.customers FOR SELECT TO ${role} USING (id % 2 = 0);`);
  }, 60_000);
  afterAll(async () => {
    await pipeline?.cleanup();
    const admin = new Client({ connectionString: process.env.TEST_PG_URL ?? 'postgresql://root@127.0.0.1:5432/postgres' });
    await admin.connect();
    await admin.query(`DROP ROLE IF EXISTS ${role}`).finally(() => admin.end());
  });

  it('publishes snapshot.failed naming the table and what the role needs, once per trigger, under deterministic ids', async () => {
    const url = new URL(pipeline.source.url);
    url.username = role;
    await pipeline.startDumper({ SOURCE_DATABASE_URL: url.toString() });
    await pipeline.trigger('2024-03-02', 'first-run');
    await pipeline.events.waitFor('snapshot.failed', (c) => c.of('snapshot.failed').length === 1);
    const [failed] = pipeline.events.of('snapshot.failed');
    expect(failed).toMatchObject({ date: '2024-03-02', code: 'row-security', attempts: 1 });
    expect(String(failed.error)).toMatch(/public\.customers .*BYPASSRLS.*owner.*pg_read_all_data plus BYPASSRLS/);
    expect(pipeline.events.of('snapshot.ready')).toEqual([]);

    // A re-run of the date is a new trigger: its events are stored too, under ids of their own.
    await pipeline.trigger('2024-03-02', 'second-run');
    await pipeline.events.waitFor('the re-run to fail too', (c) => c.of('snapshot.failed').length === 2);
    const { url: natsUrl, stream, prefix } = pipeline.namespace;
    const stored = await streamEvents(natsUrl, stream, prefix);
    const triggerSeqs = stored.flatMap((e, index) => (e.subject === 'replication.trigger' ? [index + 1] : []));
    expect(triggerSeqs).toHaveLength(2);
    const ids = (subject: string) => stored.filter((e) => e.subject === subject).map((e) => e.msgId);
    expect(ids('snapshot.dump.started')).toEqual(triggerSeqs.map((seq) => `dump-started:2024-03-02:${seq}:1:1`));
    expect(ids('snapshot.failed')).toEqual(triggerSeqs.map((seq) => `dump-failed:2024-03-02:${seq}`));
    expect(ofSubject(stored, 'snapshot.failed')).toHaveLength(2);

    // A publish retried after a lost ack carries the same id, and the broker keeps one copy.
    const nc = await natsConnect({ servers: natsUrl });
    try {
      const ack = await jetstream(nc).publish(`${prefix}snapshot.failed`, JSON.stringify(failed), { msgID: `dump-failed:2024-03-02:${triggerSeqs[0]}` });
      expect(ack.duplicate).toBe(true);
    } finally {
      await nc.close();
    }
  }, 90_000);
});
