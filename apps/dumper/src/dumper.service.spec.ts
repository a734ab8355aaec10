import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { loadDumperConfig } from '@app/common/config';
import { type SnapshotReadyPayload, type Subject, SUBJECTS, TRIGGER_SEQ_HEADER } from '@app/common/contract';
import { announcedSnapshots, BrokerCallStoppedError, ensureStream, EventPublisher, kvKeys, type PublishOptions } from '@app/common/messaging';
import { MetricsService } from '@app/common/observability';
import { FsSnapshotStore } from '@app/common/snapshot-store';
import { createDatabase, type TestDatabase } from '../../../test/support/databases';
import { NATS_URL, specNatsConfig } from '../../../test/support/nats';
import { OwnNatsServer } from '../../../test/support/nats-server';
import { DumperService } from './dumper.service';
import { announceOnce } from './earlier-announcement';
import { applyRetention } from './retention';
import { announcementBucket } from './snapshot-records';
import { SourceDatabase } from './source-database';

/** What a dump failure says in events: PostgreSQL's own errors, from a real server. */
describe('DumperService.describe', () => {
  let db: TestDatabase;
  let source: SourceDatabase;

  beforeAll(async () => {
    db = await createDatabase('dumper_describe', `CREATE TABLE public.cards (number text PRIMARY KEY); INSERT INTO public.cards VALUES ('4111 1111 1111 1111');`);
    source = new SourceDatabase(db.url);
  });
  afterAll(async () => {
    await source?.end();
    await db?.drop();
  });

  const service = (errorDetail: boolean) => {
    const config = loadDumperConfig({ SOURCE_DATABASE_URL: db.url, ERROR_DETAIL: String(errorDetail) });
    // describe() reads only the configuration; the broker and the database are not involved.
    return new DumperService(config, undefined as never, undefined as never, undefined as never, source, undefined as never);
  };

  const failing = async (sql: string): Promise<unknown> => {
    const client = await source.connect();
    try {
      await client.query(sql);
    } catch (error) {
      return error;
    } finally {
      client.release();
    }
    throw new Error(`${sql} did not fail`);
  };

  it('keeps row values out of the event unless ERROR_DETAIL=true, and gives the SQLSTATE', async () => {
    const duplicate = await failing(`INSERT INTO public.cards VALUES ('4111 1111 1111 1111')`);
    const badInput = await failing(`SELECT '4111 1111 1111 1111'::int`);
    for (const error of [duplicate, badInput]) expect(JSON.stringify(service(false).describe(error))).not.toContain('4111');
    expect(service(false).describe(duplicate)).toMatchObject({ code: '23505' });
    expect(service(false).describe(badInput)).toMatchObject({ code: '22P02' });
    expect(service(true).describe(duplicate).error).toContain('4111 1111 1111 1111');
  });
});

/**
 * The trigger is acked when dump() returns; a retention run must not hold that up. During a broker
 * failover retention's JetStream calls take seconds, and an ack lost meanwhile means the trigger is
 * delivered again (seen in the 3-node cluster e2e), which costs a lookup of its announcement at least.
 */
describe('DumperService.dump and retention', () => {
  let db: TestDatabase;
  let source: SourceDatabase;
  let dir: string;
  let nc: NatsConnection;
  const nats = specNatsConfig('dumper_retention_order', 30_000);

  beforeAll(async () => {
    db = await createDatabase('dumper_retention_order', `CREATE TABLE public.items (id int PRIMARY KEY); INSERT INTO public.items SELECT generate_series(1, 100);`);
    source = new SourceDatabase(db.url);
    dir = mkdtempSync(join(tmpdir(), 'db-fanout-dumper-spec-'));
    nc = await connect({ servers: NATS_URL });
    await ensureStream(await jetstreamManager(nc), nats);
  });
  afterAll(async () => {
    await (await jetstreamManager(nc)).streams.delete(nats.stream).catch(() => undefined);
    await (await jetstreamManager(nc)).streams.delete(`KV_${announcementBucket(nats)}`).catch(() => undefined);
    await nc?.close();
    await source?.end();
    await db?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('announces the snapshot and returns while retention is still running; shutdown waits for retention', async () => {
    const config = { ...loadDumperConfig({ SOURCE_DATABASE_URL: db.url, SNAPSHOT_DIR: dir }), nats };
    // A real directory store whose listing (retention's first step) waits until the test lets it go.
    let releaseListing!: () => void;
    const listingHeld = new Promise<void>((resolve) => (releaseListing = resolve));
    let listingStarted = false;
    const store = new (class extends FsSnapshotStore {
      override async list() {
        listingStarted = true;
        await listingHeld;
        return super.list();
      }
    })(dir);
    const service = new DumperService(config, new EventPublisher(nc, nats), new MetricsService(), nc, source, store);

    const outcome = await Promise.race([service.dump('2024-03-01', { seq: 1, delivery: 1 }), sleep(15_000).then(() => 'still waiting for retention' as const)]);
    expect(outcome).toMatchObject({ status: 'ready' });
    expect((await announcedSnapshots(nc, nats)).map((a) => a.body.snapshotId)).toEqual([outcome !== 'still waiting for retention' && outcome.status === 'ready' ? outcome.snapshot.snapshotId : '']);
    expect(listingStarted).toBe(true);

    let shutDown = false;
    const shutdown = service.beforeApplicationShutdown().then(() => (shutDown = true));
    await sleep(100);
    expect(shutDown).toBe(false);
    releaseListing();
    await shutdown;
    expect(shutDown).toBe(true);
  });
});

/**
 * A trigger delivered again after its snapshot was announced: its ack was lost (seen in the 3-node
 * cluster e2e when the leader died mid-dump) or the dumper died between the announcement and the
 * ack. The date must not be dumped and announced a second time.
 */
describe('DumperService.dump of a redelivered trigger (real NATS)', () => {
  let db: TestDatabase;
  let source: SourceDatabase;
  let dir: string;
  let nc: NatsConnection;
  const nats = specNatsConfig('dumper_redelivery', 30_000);

  beforeAll(async () => {
    db = await createDatabase('dumper_redelivery', `CREATE TABLE public.items (id int PRIMARY KEY); INSERT INTO public.items SELECT generate_series(1, 100);`);
    source = new SourceDatabase(db.url);
    dir = mkdtempSync(join(tmpdir(), 'db-fanout-dumper-redelivery-'));
    nc = await connect({ servers: NATS_URL });
    await ensureStream(await jetstreamManager(nc), nats);
  });
  afterAll(async () => {
    await (await jetstreamManager(nc)).streams.delete(nats.stream).catch(() => undefined);
    await (await jetstreamManager(nc)).streams.delete(`KV_${announcementBucket(nats)}`).catch(() => undefined);
    await nc?.close();
    await source?.end();
    await db?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers from the announcement when the trigger was dumped already, and dumps a trigger that was not', async () => {
    const config = { ...loadDumperConfig({ SOURCE_DATABASE_URL: db.url, SNAPSHOT_DIR: dir }), nats };
    const store = new FsSnapshotStore(dir);
    const service = new DumperService(config, new EventPublisher(nc, nats), new MetricsService(), nc, source, store);
    try {
      const first = await service.dump('2024-03-02', { seq: 7, delivery: 1 });
      expect(first.status).toBe('ready');
      const snapshotId = first.status === 'ready' ? first.snapshot.snapshotId : '';

      // Trigger #7 again (its ack was lost): the announced snapshot is the answer, nothing is dumped.
      const again = await service.dump('2024-03-02', { seq: 7, delivery: 2 });
      expect(again).toEqual(first);
      let announced = await announcedSnapshots(nc, nats);
      expect(announced.map((a) => a.body.snapshotId)).toEqual([snapshotId]);
      expect((await store.list()).map((s) => s.snapshotId)).toEqual([snapshotId]);
      const stored = await (await jetstreamManager(nc)).streams.getMessage(nats.stream, { seq: announced[0].seq });
      expect(stored?.header.get(TRIGGER_SEQ_HEADER)).toBe('7');

      // Trigger #8 on its second delivery, whose first one announced nothing (the dumper died mid-dump): dumped.
      const other = await service.dump('2024-03-02', { seq: 8, delivery: 2 });
      expect(other.status).toBe('ready');
      announced = await announcedSnapshots(nc, nats);
      expect(announced.map((a) => [a.body.snapshotId, a.trigger])).toEqual([
        [snapshotId, 7],
        [other.status === 'ready' ? other.snapshot.snapshotId : '', 8],
      ]);
      expect(new Set((await store.list()).map((s) => s.snapshotId)).size).toBe(2);
    } finally {
      await service.beforeApplicationShutdown();
    }
  });

  it('leaves no record of a snapshot whose manifest could not be written', async () => {
    const config = { ...loadDumperConfig({ SOURCE_DATABASE_URL: db.url, SNAPSHOT_DIR: dir }), nats };
    // A real directory store whose manifest write fails (a full disk, a refused PUT): the snapshot is removed.
    const store = new (class extends FsSnapshotStore {
      override async begin(snapshotId: string) {
        const upload = await super.begin(snapshotId);
        return { ...upload, commit: () => Promise.reject(Object.assign(new Error('no space left on device'), { code: 'ENOSPC' })) };
      }
    })(dir);
    const service = new DumperService(config, new EventPublisher(nc, nats), new MetricsService(), nc, source, store);
    const kv = await new Kvm(nc).create(announcementBucket(nats), { history: 1 });
    // Records with a value (a purged key keeps only its purge marker, which retention reads as none).
    const records = async () => {
      const live: string[] = [];
      for (const key of await kvKeys(nc, announcementBucket(nats))) if ((await kv.get(key))?.value.length) live.push(key);
      return live;
    };
    const before = await records();
    try {
      const outcome = await service.dump('2024-03-05', { seq: 20, delivery: 1 });
      expect(outcome.status).toBe('failed');
      expect((await store.list()).filter((s) => s.snapshotId.startsWith('20240305'))).toEqual([]);
      // Retention never lists it, so a record left here would stay for good.
      expect(await records()).toEqual(before);
    } finally {
      await service.beforeApplicationShutdown();
    }
  });

  /** Announcements of one date and trigger, and the snapshots of the date left in the store. */
  const outcomeOf = async (store: FsSnapshotStore, date: string, trigger: number) => ({
    announced: (await announcedSnapshots(nc, nats)).filter((a) => a.trigger === trigger).map((a) => a.body.snapshotId),
    stored: (await store.list()).map((s) => s.snapshotId).filter((id) => id.startsWith(date.replaceAll('-', ''))),
  });

  /**
   * A real publisher that lets another announcement reach the stream just before the dumper's own
   * snapshot.ready: what happens when two deliveries of a trigger dump at once and the other one
   * finishes first (its progress acks lost in a failover, so the trigger was redelivered mid-dump).
   */
  const outrunBy = (rival: (own: SnapshotReadyPayload) => { snapshot: SnapshotReadyPayload; trigger: number }) => {
    const publisher = new EventPublisher(nc, nats);
    const rivals: SnapshotReadyPayload[] = [];
    const events = {
      publish: async (subject: Subject, payload: object, msgID?: string, options?: PublishOptions) => {
        if (subject === SUBJECTS.snapshotReady && rivals.length === 0) {
          const { snapshot, trigger } = rival(payload as SnapshotReadyPayload);
          rivals.push(snapshot);
          await publisher.publish(subject, snapshot, `ready:${snapshot.snapshotId}`, { headers: { [TRIGGER_SEQ_HEADER]: String(trigger) } });
        }
        return publisher.publish(subject, payload, msgID, options);
      },
    };
    return { events: events as unknown as EventPublisher, rivals };
  };

  it('gives way when another delivery of the trigger announced first: one announcement, its own snapshot removed', async () => {
    const config = { ...loadDumperConfig({ SOURCE_DATABASE_URL: db.url, SNAPSHOT_DIR: dir }), nats };
    const store = new FsSnapshotStore(dir);
    const { events, rivals } = outrunBy((own) => ({ snapshot: { ...own, snapshotId: '20240304-0000f00d', location: join(dir, 'prod_snapshot_20240304-0000f00d') }, trigger: 9 }));
    const service = new DumperService(config, events, new MetricsService(), nc, source, store);
    try {
      const outcome = await service.dump('2024-03-04', { seq: 9, delivery: 2 });
      expect(outcome).toEqual({ status: 'ready', snapshot: rivals[0] });
      expect(await outcomeOf(store, '2024-03-04', 9)).toEqual({ announced: ['20240304-0000f00d'], stored: [] });
    } finally {
      await service.beforeApplicationShutdown();
    }
  });

  it("announces its snapshot when another trigger's announcement came in between (it reads the stream again)", async () => {
    const config = { ...loadDumperConfig({ SOURCE_DATABASE_URL: db.url, SNAPSHOT_DIR: dir }), nats };
    const store = new FsSnapshotStore(dir);
    const { events } = outrunBy((own) => ({ snapshot: { ...own, date: '2024-03-06', snapshotId: '20240306-0000beef', location: join(dir, 'prod_snapshot_20240306-0000beef') }, trigger: 11 }));
    const service = new DumperService(config, events, new MetricsService(), nc, source, store);
    try {
      const outcome = await service.dump('2024-03-05', { seq: 10, delivery: 1 });
      expect(outcome.status).toBe('ready');
      const own = outcome.status === 'ready' ? outcome.snapshot.snapshotId : '';
      expect(await outcomeOf(store, '2024-03-05', 10)).toEqual({ announced: [own], stored: [own] });
      expect((await outcomeOf(store, '2024-03-06', 11)).announced).toEqual(['20240306-0000beef']);
    } finally {
      await service.beforeApplicationShutdown();
    }
  });

  it('removes its snapshot and fails (the trigger is delivered again) when the announcements cannot be read after the dump', async () => {
    const config = { ...loadDumperConfig({ SOURCE_DATABASE_URL: db.url, SNAPSHOT_DIR: dir }), nats };
    const store = new FsSnapshotStore(dir);
    // A connection that is gone by the time the dump is done: nothing can be read or published.
    const gone = await connect({ servers: NATS_URL });
    await gone.close();
    const service = new DumperService(config, new EventPublisher(gone, nats), new MetricsService(), gone, source, store);
    try {
      await expect(service.dump('2024-03-08', { seq: 13, delivery: 1 })).rejects.toThrow();
      expect(await outcomeOf(store, '2024-03-08', 13)).toEqual({ announced: [], stored: [] });
    } finally {
      await service.beforeApplicationShutdown();
    }
  });

  it('keeps its snapshot when it is announced already, even if another answer of the trigger came after it', async () => {
    const config = { ...loadDumperConfig({ SOURCE_DATABASE_URL: db.url, SNAPSHOT_DIR: dir }), nats };
    const store = new FsSnapshotStore(dir);
    const events = new EventPublisher(nc, nats);
    const service = new DumperService(config, events, new MetricsService(), nc, source, store);
    try {
      const dumped = await service.dump('2024-03-09', { seq: 14, delivery: 1 });
      if (dumped.status !== 'ready') throw new Error(`the dump failed: ${dumped.error}`);
      const own = dumped.snapshot;
      // A publish of ours whose ack was lost, and after it another delivery's answer of trigger #14.
      const rival = { ...own, snapshotId: '20240309-0000cafe', location: join(dir, 'prod_snapshot_20240309-0000cafe') };
      await events.publish(SUBJECTS.snapshotReady, rival, `ready:${rival.snapshotId}`, { headers: { [TRIGGER_SEQ_HEADER]: '14' } });
      const answer = await announceOnce(own, { seq: 14, delivery: 1 }, { connection: nc, nats, events, store, log: () => undefined });
      expect(answer).toBe(own);
      expect(await outcomeOf(store, '2024-03-09', 14)).toEqual({ announced: [own.snapshotId, rival.snapshotId], stored: [own.snapshotId] });
    } finally {
      await service.beforeApplicationShutdown();
    }
  });

  it('two deliveries of one trigger dumping at once announce one snapshot, which both return', async () => {
    const config = { ...loadDumperConfig({ SOURCE_DATABASE_URL: db.url, SNAPSHOT_DIR: dir }), nats };
    const store = new FsSnapshotStore(dir);
    const replicas = [0, 1].map(() => new DumperService(config, new EventPublisher(nc, nats), new MetricsService(), nc, source, store));
    try {
      const outcomes = await Promise.all(replicas.map((replica, i) => replica.dump('2024-03-07', { seq: 12, delivery: i + 1 })));
      const ids = outcomes.map((outcome) => (outcome.status === 'ready' ? outcome.snapshot.snapshotId : outcome.error));
      expect(ids[0]).toBe(ids[1]);
      expect(await outcomeOf(store, '2024-03-07', 12)).toEqual({ announced: [ids[0]], stored: [ids[0]] });
    } finally {
      for (const replica of replicas) await replica.beforeApplicationShutdown();
    }
  });

  it('records a snapshot whose announcement is refused for good, and retention removes it once it expires', async () => {
    const own = mkdtempSync(join(tmpdir(), 'db-fanout-dumper-refused-'));
    const config = { ...loadDumperConfig({ SOURCE_DATABASE_URL: db.url, SNAPSHOT_DIR: own }), nats };
    const store = new FsSnapshotStore(own);
    const publisher = new EventPublisher(nc, nats);
    // NATS refuses every snapshot.ready of this dump (after the publisher's own retries): the trigger is delivered again.
    const refusing = {
      publish: (subject: Subject, ...rest: Parameters<EventPublisher['publish']> extends [unknown, ...infer R] ? R : never) =>
        subject === SUBJECTS.snapshotReady ? Promise.reject(new Error('TimeoutError: timeout')) : publisher.publish(subject, ...rest),
    } as unknown as EventPublisher;
    const refused = new DumperService(config, refusing, new MetricsService(), nc, source, store);
    const working = new DumperService(config, publisher, new MetricsService(), nc, source, store);
    try {
      await expect(refused.dump('2024-03-10', { seq: 15, delivery: 1 })).rejects.toThrow('timeout');
      const [unannounced] = (await outcomeOf(store, '2024-03-10', 15)).stored;
      expect(unannounced).toBeDefined();
      // The redelivery dumps the date again and announces a new snapshot.
      const again = await working.dump('2024-03-10', { seq: 15, delivery: 2 });
      if (again.status !== 'ready') throw new Error(`the dump failed: ${again.error}`);
      expect(again.snapshot.snapshotId).not.toBe(unannounced);
      await working.beforeApplicationShutdown();

      // Past SNAPSHOT_RETENTION, with no loader left to take anything: the unannounced one goes, the newest stays.
      const result = await applyRetention(nc, nats, store, 7 * 86_400_000, Date.now() + 8 * 86_400_000);
      expect(result.removed).toEqual([`prod_snapshot_${unannounced} (never announced)`]);
      expect(result.notAnnounced).toEqual([]);
      expect((await store.list()).map((s) => s.snapshotId)).toEqual([again.snapshot.snapshotId]);
    } finally {
      await refused.beforeApplicationShutdown();
      await working.beforeApplicationShutdown();
      rmSync(own, { recursive: true, force: true });
    }
  });

  it('records its snapshot as its own before the manifest makes it one: a dumper killed before the announcement leaves it known', async () => {
    const config = { ...loadDumperConfig({ SOURCE_DATABASE_URL: db.url, SNAPSHOT_DIR: dir }), nats };
    const recordedAtCommit: (string | undefined)[] = [];
    const store = new (class extends FsSnapshotStore {
      override async begin(snapshotId: string) {
        const upload = await super.begin(snapshotId);
        const commit = upload.commit;
        upload.commit = async (manifest) => {
          const entry = await (await new Kvm(nc).open(announcementBucket(nats))).get(snapshotId).catch(() => null);
          recordedAtCommit.push(entry?.operation === 'PUT' ? entry.string() : undefined);
          return commit(manifest);
        };
        return upload;
      }
    })(dir);
    const service = new DumperService(config, new EventPublisher(nc, nats), new MetricsService(), nc, source, store);
    try {
      expect(await service.dump('2024-03-11', { seq: 16, delivery: 1 })).toMatchObject({ status: 'ready' });
      expect(recordedAtCommit).toEqual(['{}']);
    } finally {
      await service.beforeApplicationShutdown();
    }
  });
});

/**
 * A stop while the announcement of a snapshot just written cannot reach the broker: given up at
 * once, not after the retries' 45 s; the trigger is handed back and dumps the date again, and the
 * snapshot is kept (removing it and its record would wait on the broker as long again).
 */
describe('announceOnce, the app stopping while NATS is down', () => {
  let server: OwnNatsServer;
  let nc: NatsConnection;
  const nats = specNatsConfig('dumper_stop_down');

  beforeAll(async () => {
    server = await OwnNatsServer.start();
    nc = await connect({ servers: server.url, maxReconnectAttempts: -1, reconnectTimeWait: 500 });
    await ensureStream(await jetstreamManager(nc), { ...nats, servers: [server.url] });
    await server.stop();
  });
  afterAll(async () => {
    await nc?.close();
    await server?.destroy();
  });

  it('gives up at once, keeps the snapshot, and says so', async () => {
    const snapshot = { snapshotId: '20240312-0000d00d', date: '2024-03-12' } as SnapshotReadyPayload;
    const removed: string[] = [];
    const store = { kind: 'fs', remove: (id: string) => Promise.resolve(void removed.push(id)) } as unknown as FsSnapshotStore;
    const logged: string[] = [];
    const stop = new AbortController();
    const announcing = announceOnce(snapshot, { seq: 17, delivery: 1 }, { connection: nc, nats, events: new EventPublisher(nc, nats), store, log: (line) => logged.push(line), signal: stop.signal }).then(
      () => 'announced',
      (error: unknown) => error,
    );
    await sleep(1_000);
    const stoppedAt = Date.now();
    stop.abort();
    const failure = await announcing;
    expect(Date.now() - stoppedAt).toBeLessThan(1_000);
    expect(failure).toBeInstanceOf(BrokerCallStoppedError);
    expect(removed).toEqual([]);
    expect(logged).toContainEqual(expect.stringMatching(/^kept snapshot 20240312-0000d00d, not announced: reading the announcements given up: the app is stopping/));
  });
});
