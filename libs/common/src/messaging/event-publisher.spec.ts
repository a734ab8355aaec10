import { jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { setTimeout as sleep } from 'node:timers/promises';
import { specNatsConfig } from '../../../../test/support/nats';
import { OwnNatsServer } from '../../../../test/support/nats-server';
import { SUBJECTS } from '../contract/subjects';
import { BrokerCallStoppedError, EventPublisher, withBrokerRetry } from './event-publisher';
import { ensureStream } from './stream-setup';

const timeout = () => Object.assign(new Error('timeout'), { name: 'TimeoutError' });
/** A connection as withBrokerRetry sees it: open, whatever the broker does. */
const open = { isClosed: () => false } as NatsConnection;

/** withBrokerRetry's bounds: its 45 s budget counts the tries' own waits, and the app's stop ends it at once. */
describe('withBrokerRetry', () => {
  it('gives up once the budget is spent, counting each try\'s wait for an answer (a broker that is out: 5 s a try)', async () => {
    const started = Date.now();
    const tries: number[] = [];
    const retries: string[] = [];
    const failure = await withBrokerRetry(
      open,
      'publishing x',
      async () => {
        tries.push(Date.now() - started);
        // A publish's request timeout: what every try waits while the broker is out.
        await sleep(5_000);
        throw timeout();
      },
      (line) => retries.push(line),
    ).catch((error: unknown) => error);
    const took = Date.now() - started;
    expect(failure).toMatchObject({ name: 'TimeoutError' });
    // The documented 45 s are the whole call's: 1 + 6 tries of 5 s plus pauses of 1..15 s took about 80 s.
    expect(took).toBeGreaterThanOrEqual(43_000);
    expect(took).toBeLessThan(48_000);
    expect(retries).toHaveLength(tries.length - 1);
    expect(retries[0]).toMatch(/^publishing x failed \(attempt 1\), retrying in 1 s \(for up to [\d.]+ s more\): timeout$/);
  }, 100_000);

  it('stops retrying as soon as the app stops: a pause cut short, no further try', async () => {
    const stop = new AbortController();
    let tries = 0;
    const started = Date.now();
    setTimeout(() => stop.abort(), 300);
    const failure = await withBrokerRetry(
      open,
      'publishing x',
      () => {
        tries++;
        return Promise.reject(timeout());
      },
      () => undefined,
      { signal: stop.signal },
    ).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(BrokerCallStoppedError);
    expect((failure as Error).message).toBe('publishing x given up: the app is stopping (after 1 attempt(s), the last: timeout)');
    expect(tries).toBe(1);
    expect(Date.now() - started).toBeLessThan(900);
  });

  it('cuts a try in flight short when the app stops', async () => {
    const stop = new AbortController();
    const started = Date.now();
    setTimeout(() => stop.abort(), 300);
    const failure = await withBrokerRetry(open, 'publishing x', () => new Promise<never>(() => undefined), () => undefined, { signal: stop.signal }).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(BrokerCallStoppedError);
    expect((failure as Error).message).toBe('publishing x given up: the app is stopping (attempt 1 cut short)');
    expect(Date.now() - started).toBeLessThan(900);
  });

  it('gives a call begun after the stop one try, of at most 5 s: a committed load is still announced, a last delivery still reported', async () => {
    const stopped = AbortSignal.abort();
    await expect(withBrokerRetry(open, 'publishing x', () => Promise.resolve('stored'), () => undefined, { signal: stopped })).resolves.toBe('stored');
    let tries = 0;
    const started = Date.now();
    const failure = await withBrokerRetry(
      open,
      'publishing x',
      () => {
        tries++;
        return new Promise<never>(() => undefined);
      },
      () => undefined,
      { signal: stopped },
    ).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(BrokerCallStoppedError);
    expect(tries).toBe(1);
    expect(Date.now() - started).toBeGreaterThanOrEqual(4_900);
    expect(Date.now() - started).toBeLessThan(7_000);
  });
});

/** EventPublisher against a broker that went away while the app was connected (a restart, an outage). */
describe('EventPublisher with NATS down', () => {
  let server: OwnNatsServer;
  let nc: NatsConnection;
  const config = specNatsConfig('publisher_down');

  beforeAll(async () => {
    server = await OwnNatsServer.start();
    nc = await connect({ servers: server.url, maxReconnectAttempts: -1, reconnectTimeWait: 500 });
    await ensureStream(await jetstreamManager(nc), { ...config, servers: [server.url] });
    await server.stop();
  });
  afterAll(async () => {
    await nc?.close();
    await server?.destroy();
  });

  it('a stop during the publish\'s retries ends it at once, with an error that says so', async () => {
    const stop = new AbortController();
    const publishing = new EventPublisher(nc, config).publish(SUBJECTS.snapshotLoaded, { snapshotId: 'x' }, 'loaded:x', { signal: stop.signal });
    const outcome = publishing.then(
      () => 'stored',
      (error: unknown) => error,
    );
    await sleep(1_000);
    const stoppedAt = Date.now();
    stop.abort();
    const failure = await outcome;
    expect(failure).toBeInstanceOf(BrokerCallStoppedError);
    expect((failure as Error).message).toMatch(/^publishing snapshot\.loaded given up: the app is stopping/);
    expect(Date.now() - stoppedAt).toBeLessThan(500);
  });
});
