import { createServer, type Server } from 'node:net';
import { RunningApp } from './support/apps';
import { natsNamespace, type NatsNamespace } from './support/nats';
import { until } from './support/pipeline';

/**
 * /health is readiness (can the app work now?), /health/live is liveness (does the process answer?).
 * A loader whose target database is away is not ready but alive: it keeps its messages and retries,
 * and a liveness probe must not restart it for that.
 */
describe('/health and /health/live of a loader whose database is away', () => {
  let namespace: NatsNamespace;
  let closedPort: number;
  let loader: RunningApp | undefined;

  beforeAll(async () => {
    namespace = natsNamespace('health');
    // A port that nothing listens on: bound, read, and released.
    const server: Server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    closedPort = (server.address() as { port: number }).port;
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  afterAll(async () => {
    await loader?.stop();
    await namespace?.cleanup();
  });

  it('answers /health 503 naming the database, and /health/live 200, also without the METRICS_TOKEN that guards /health', async () => {
    loader = await RunningApp.start('loader', {
      ...namespace.env,
      TARGET_DATABASE_URL: `postgresql://loader@127.0.0.1:${closedPort}/dev`,
      LOADER_ENV: 'dev',
      METRICS_TOKEN: 'metrics-token-health',
    });
    const base = `http://127.0.0.1:${loader.port}`;
    await until('the loader to answer HTTP', async () => {
      if (loader!.exitCode !== undefined) throw new Error(`loader exited with ${loader!.exitCode}:\n${loader!.output}`);
      return (await fetch(`${base}/health/live`).catch(() => undefined))?.status === 200;
    });
    expect(await (await fetch(`${base}/health/live`)).json()).toEqual({ status: 'ok' });
    expect((await fetch(`${base}/health`)).status).toBe(401);
    const health = await fetch(`${base}/health`, { headers: { Authorization: 'Bearer metrics-token-health' } });
    expect(health.status).toBe(503);
    expect(JSON.stringify(await health.json())).toMatch(/database/i);
    // It stays up, and alive, while the database stays away.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(loader.exitCode).toBeUndefined();
    expect((await fetch(`${base}/health/live`)).status).toBe(200);
  }, 60_000);
});
