import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { NatsSnapshotStore } from '@app/common/snapshot-store';
import { contentAndSequences, type TestDatabase } from './support/databases';
import { DEMO_TABLES } from './support/fixtures';
import { OwnNatsCluster } from './support/nats-cluster';
import { appSessions, loaderSessions, PipelineHarness, until } from './support/pipeline';
import { ofSubject, type StoredEvent, streamEvents } from './support/stream-events';

const ENVIRONMENTS = ['dev', 'staging', 'qa'];
/** Loaders with an object store need no snapshot directory: this one does not exist. */
const NO_DIR = join(tmpdir(), `db-fanout-no-such-dir-${randomBytes(4).toString('hex')}`);
/** From the kill to the last environment loaded: a failover costs seconds, not the download watchdogs' minutes. */
const FAILOVER_BOUND_MS = 90_000;

/**
 * Retries that outlast a leader election, as a clustered setup should have them: 2, 4, 8 and 16 s.
 * With 2 retries 1 s apart, a dump attempt whose put timed out was retried twice into a stream still
 * without a leader ("JetStream system temporarily unavailable", 11 s after the kill on 2 busy cores)
 * and failed for good. The default (5 minutes apart) outlasts an election too.
 */
const FAILOVER_RETRIES = { RETRIES: '4', RETRY_DELAY: '2s', RETRY_BACKOFF: 'exponential' };

/** The big table: enough data (about 60 MB of CSV) that every loader is still downloading it when the leader dies. */
const BIG_ROWS = 800_000;
const BIG_TABLE_SQL = 'CREATE TABLE public.big (id int PRIMARY KEY, filler text);';

/** What a user checks: the demo tables and sequences row for row, and the big table by count and checksum. */
async function contentOf(db: TestDatabase): Promise<unknown[]> {
  const big = await db.query<{ n: string; sum: string }>("SELECT count(*)::text AS n, md5(string_agg(id || ':' || filler, ',' ORDER BY id)) AS sum FROM public.big");
  return [...(await contentAndSequences(db, DEMO_TABLES)), big[0]];
}

async function leaderOf(jsm: JetStreamManager, stream: string): Promise<string> {
  const leader = (await jsm.streams.info(stream)).cluster?.leader;
  if (!leader) throw new Error(`stream ${stream} has no leader`);
  return leader;
}

/**
 * The acceptance test of loaders anywhere on a clustered JetStream: three nats-server processes,
 * the event stream, the dumper's KV bucket and the snapshot Object Store with 3 replicas, and
 * `kill -9` of the Object Store stream's leader while every loader is streaming the snapshot into
 * its COPY. Every environment must end loaded exactly once, equal to production, within a bound.
 */
describe('a 3-node JetStream cluster losing the snapshot stream leader mid-transfer', () => {
  const bucket = `cluster-${randomBytes(4).toString('hex')}`;
  let cluster: OwnNatsCluster;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  let pipeline: PipelineHarness;

  beforeAll(async () => {
    cluster = await OwnNatsCluster.start();
    nc = await connect({ servers: cluster.url.split(','), maxReconnectAttempts: -1, reconnectTimeWait: 250 });
    jsm = await jetstreamManager(nc);
    const targetSql = Object.fromEntries(ENVIRONMENTS.map((env) => [env, BIG_TABLE_SQL]));
    pipeline = await PipelineHarness.create('cluster', {
      environments: ENVIRONMENTS,
      natsUrl: cluster.url,
      targetSql,
      env: { SNAPSHOT_STORE: 'nats', SNAPSHOT_BUCKET: bucket, SNAPSHOT_REPLICAS: '3', NATS_STREAM_REPLICAS: '3', SNAPSHOT_DIR: NO_DIR, ...FAILOVER_RETRIES },
    });
    await pipeline.source.query(`${BIG_TABLE_SQL} INSERT INTO public.big SELECT g, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, ${BIG_ROWS}) g`);
    await pipeline.startDumper({ TABLES: `${DEMO_TABLES.join(',')},public.big` });
    for (const env of ENVIRONMENTS) await pipeline.startLoader(env);
  }, 90_000);

  afterAll(async () => {
    await pipeline?.cleanup();
    await nc?.close();
    await cluster?.destroy();
  });

  /** A node brought back must have caught up before the next kill, or that kill leaves no quorum. */
  const everyReplicaCurrent = (stream: string) =>
    until(
      `every replica of ${stream} current`,
      async () => {
        const replicas = (await jsm.streams.info(stream).catch(() => undefined))?.cluster?.replicas;
        return replicas?.length === 2 && replicas.every((r) => r.current && !r.offline);
      },
      60_000,
    );
  /** On failure: what the apps said about the failover (retries, stalls, reconnects, errors). */
  const withAppsNotes = (error: unknown): Error => {
    const notable = pipeline.fleet.logs().split('\n').filter((line) => /^---|warn|error|stall|retry|reconnect|disconnect|loaded|loading|snapshot/i.test(line));
    return new Error(`${(error as Error).message}\napps' notable log lines:\n${notable.join('\n')}`, { cause: error });
  };

  it('loads every environment exactly once, equal to production, within the bound', async () => {
    const started = Date.now();
    const timeline: string[] = [];
    const mark = (what: string) => timeline.push(`${((Date.now() - started) / 1000).toFixed(1)} s ${what}`);
    try {
      await pipeline.trigger('2024-08-01');
      await pipeline.events.waitFor('snapshot.ready', (c) => c.of('snapshot.ready').length === 1, 90_000);
      mark('snapshot.ready');
      const snapshotId = String(pipeline.readyFor('2024-08-01')!.snapshotId);

      // The kill lands during the transfer: every loader is inside its COPY of the big table, which
      // reads the object straight from the store.
      await until(
        'every loader to be streaming the big table into its COPY',
        async () => {
          for (const env of ENVIRONMENTS) {
            if (!(await loaderSessions(pipeline.targets[env])).some((s) => /COPY .*big/i.test(s.query))) return false;
          }
          return true;
        },
        60_000,
      );
      const objectStream = `OBJ_${bucket}`;
      const leader = await leaderOf(jsm, objectStream);
      const eventLeader = await leaderOf(jsm, pipeline.namespace.stream);
      mark(`every loader in COPY of public.big; kill -9 ${leader} (leader of ${objectStream}; the event stream's leader is ${eventLeader})`);
      expect(pipeline.events.of('snapshot.loaded')).toEqual([]);
      const killedAt = Date.now();
      cluster.kill(leader);

      // The stream is the record (a core subscription misses what is published during a reconnect);
      // while the event stream's consumers move, a read may come back short or fail: look again.
      let events: StoredEvent[] = [];
      await until(
        `every environment loaded within ${FAILOVER_BOUND_MS / 1000} s of the kill`,
        async () => {
          events = await streamEvents(cluster.url, pipeline.namespace.stream, pipeline.namespace.prefix).catch(() => []);
          const loaded = ofSubject(events, 'snapshot.loaded');
          return ENVIRONMENTS.every((env) => loaded.some((e) => e.environment === env && e.snapshotId === snapshotId));
        },
        FAILOVER_BOUND_MS,
      );
      mark(`all loaded, ${((Date.now() - killedAt) / 1000).toFixed(1)} s after the kill`);

      // Exactly once: one snapshot.loaded per environment in the stream, one ledger row, no failure.
      const loaded = ofSubject(events, 'snapshot.loaded');
      expect(ENVIRONMENTS.map((env) => loaded.filter((e) => e.environment === env).map((e) => e.snapshotId))).toEqual(ENVIRONMENTS.map(() => [snapshotId]));
      // The downloads resumed after the failover: no load had to start over.
      expect(ENVIRONMENTS.map((env) => loaded.find((e) => e.environment === env)!.attempts)).toEqual([1, 1, 1]);
      expect(ofSubject(events, 'snapshot.load.failed')).toEqual([]);
      expect(ofSubject(events, 'snapshot.ready')).toHaveLength(1);
      const production = await contentOf(pipeline.source);
      for (const env of ENVIRONMENTS) {
        const ledger = await pipeline.targets[env].query<{ snapshot_id: string }>('SELECT snapshot_id FROM db_fanout.loaded_snapshots');
        expect({ env, ledger: ledger.map((r) => r.snapshot_id) }).toEqual({ env, ledger: [snapshotId] });
        expect(await contentOf(pipeline.targets[env])).toEqual(production);
      }

      // Everything lived on three replicas: the event stream, the dumper's KV bucket and the Object Store.
      for (const stream of [pipeline.namespace.stream, `KV_${pipeline.namespace.stream}_SNAPSHOTS`, objectStream]) {
        expect({ stream, replicas: (await jsm.streams.info(stream)).config.num_replicas }).toEqual({ stream, replicas: 3 });
      }
      cluster.restart(leader);
      await everyReplicaCurrent(objectStream);
    } catch (error) {
      throw withAppsNotes(error);
    } finally {
      mark('end');
      console.log(`cluster failover timeline:\n  ${timeline.join('\n  ')}`);
    }
  }, 240_000); // the bound that matters is FAILOVER_BOUND_MS from the kill; this cap leaves room for the dump on a loaded CI machine

  /**
   * The other direction: the leader dies while the dumper is writing the snapshot into the Object
   * Store. An object cannot be put again from a COPY already half read, so an attempt whose put
   * times out is aborted and the dump retried (RETRY_DELAY) from a new export: one snapshot.ready,
   * for a complete snapshot, and nothing an aborted attempt left can pass for a snapshot.
   */
  it('publishes one complete snapshot and loads it once when the leader dies during the upload', async () => {
    const date = '2024-08-02';
    const objectStream = `OBJ_${bucket}`;
    const store = await NatsSnapshotStore.open(nc, { bucket, replicas: 3, create: false });
    const started = Date.now();
    const timeline: string[] = [];
    const mark = (what: string) => timeline.push(`${((Date.now() - started) / 1000).toFixed(1)} s ${what}`);
    let leader: string | undefined;
    try {
      await everyReplicaCurrent(objectStream);
      await pipeline.trigger(date);
      await until(
        'the dumper to be reading public.big from production',
        async () => (await appSessions(pipeline.source, 'dumper')).some((s) => s.state === 'active' && /COPY .*big/i.test(s.query)),
        60_000,
      );
      leader = await leaderOf(jsm, objectStream);
      mark(`the dumper is reading public.big into the store; kill -9 ${leader} (leader of ${objectStream})`);
      expect(pipeline.readyFor(date)).toBeUndefined();
      const killedAt = Date.now();
      cluster.kill(leader);

      let events: StoredEvent[] = [];
      let snapshotId = '';
      await until(
        `every environment loaded the ${date} snapshot within ${FAILOVER_BOUND_MS / 1000} s of the kill`,
        async () => {
          events = await streamEvents(cluster.url, pipeline.namespace.stream, pipeline.namespace.prefix).catch(() => []);
          const ready = ofSubject(events, 'snapshot.ready').find((e) => e.date === date);
          snapshotId = typeof ready?.snapshotId === 'string' ? ready.snapshotId : '';
          const loaded = ofSubject(events, 'snapshot.loaded');
          return snapshotId !== '' && ENVIRONMENTS.every((env) => loaded.some((e) => e.environment === env && e.snapshotId === snapshotId));
        },
        FAILOVER_BOUND_MS,
      );
      // Usually the put under way times out and the attempt is retried; when the new leader is
      // elected within the put's timeout, the first attempt finishes. Either way the outcome below holds.
      const retried = ofSubject(events, 'snapshot.dump.retrying')
        .filter((e) => e.date === date)
        .map((e) => JSON.stringify(e.error));
      // A trigger whose ack was lost in the failover comes again and is answered from its announcement.
      const answered = pipeline.fleet.logs().split('\n').filter((line) => line.includes('was answered already')).length;
      mark(`all loaded, ${((Date.now() - killedAt) / 1000).toFixed(1)} s after the kill; dump attempts retried: ${retried.length} (${retried.join(', ')}); redelivered triggers answered from their announcement: ${answered}`);

      // One snapshot.ready for the date: an interrupted attempt published nothing.
      expect(ofSubject(events, 'snapshot.ready').filter((e) => e.date === date).map((e) => e.snapshotId)).toEqual([snapshotId]);
      expect(ofSubject(events, 'snapshot.failed')).toEqual([]);
      const loaded = ofSubject(events, 'snapshot.loaded').filter((e) => e.snapshotId === snapshotId);
      expect(ENVIRONMENTS.map((env) => loaded.filter((e) => e.environment === env).length)).toEqual([1, 1, 1]);
      expect(ofSubject(events, 'snapshot.load.failed')).toEqual([]);
      const production = await contentOf(pipeline.source);
      for (const env of ENVIRONMENTS) {
        const ledger = await pipeline.targets[env].query<{ snapshot_id: string }>('SELECT snapshot_id FROM db_fanout.loaded_snapshots ORDER BY loaded_at');
        expect({ env, latest: ledger.at(-1)?.snapshot_id }).toEqual({ env, latest: snapshotId });
        expect(await contentOf(pipeline.targets[env])).toEqual(production);
      }
      // Every complete snapshot in the bucket is one that was announced.
      const announced = new Set(ofSubject(events, 'snapshot.ready').map((e) => String(e.snapshotId)));
      const complete = (await store.list()).filter((s) => s.complete).map((s) => s.snapshotId);
      expect(complete.filter((id) => !announced.has(id))).toEqual([]);
    } catch (error) {
      throw withAppsNotes(error);
    } finally {
      if (leader) cluster.restart(leader);
      mark('end');
      console.log(`cluster upload failover timeline:\n  ${timeline.join('\n  ')}`);
    }
  }, 240_000);
});
