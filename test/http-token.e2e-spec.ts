import { type Browser, chromium } from 'playwright-core';
import { RunningApp } from './support/apps';
import { CHROMIUM } from './support/chromium';
import { createDatabase, type TestDatabase } from './support/databases';
import { natsNamespace, type NatsNamespace, plainPublish } from './support/nats';
import { until } from './support/pipeline';

const HTTP_TOKEN = 'page-token-7f3a9c';
const METRICS_TOKEN = 'metrics-token-41d2e8';

const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });
const basic = (user: string, password: string) => ({ Authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` });

/** Starts an app with its own tokens and waits until its /health answers 200 to the metrics token. */
async function startGuarded(app: 'scheduler' | 'loader', env: Record<string, string>): Promise<RunningApp> {
  const running = await RunningApp.start(app, env);
  await until(`${app} healthy`, async () => {
    if (running.exitCode !== undefined) throw new Error(`${app} exited with ${running.exitCode}:\n${running.output}`);
    const headers = env.METRICS_TOKEN ? bearer(env.METRICS_TOKEN) : undefined;
    return (await fetch(`http://127.0.0.1:${running.port}/health`, { headers }).catch(() => undefined))?.status === 200;
  });
  return running;
}

/** HTTP_TOKEN guards the scheduler's page and API; METRICS_TOKEN guards /health and /metrics of every app. */
describe('HTTP_TOKEN and METRICS_TOKEN, over real HTTP', () => {
  let namespace: NatsNamespace;
  let target: TestDatabase;
  const apps: RunningApp[] = [];
  let browser: Browser | undefined;

  beforeAll(async () => {
    namespace = natsNamespace('tokens');
    target = await createDatabase('tokens_dev');
  });

  afterAll(async () => {
    await browser?.close();
    await Promise.all(apps.map((app) => app.stop()));
    await namespace?.cleanup();
    await target?.drop();
  });

  describe('a scheduler with both tokens', () => {
    let base: string;

    beforeAll(async () => {
      const scheduler = await startGuarded('scheduler', { ...namespace.env, SCHEDULE: '0 0 1 1 *', HTTP_TOKEN, METRICS_TOKEN });
      apps.push(scheduler);
      base = `http://127.0.0.1:${scheduler.port}`;
      await plainPublish(`${namespace.prefix}replication.trigger`, JSON.stringify({ date: '2024-08-01' }), undefined, namespace.url);
    }, 60_000);

    it('answers / and /api/runs with 401 and a challenge unless the request carries HTTP_TOKEN', async () => {
      for (const path of ['/', '/api/runs']) {
        const refused = await fetch(`${base}${path}`);
        expect(refused.status).toBe(401);
        expect(refused.headers.get('www-authenticate')).toContain('Bearer realm="db-fanout"');
        expect(refused.headers.get('www-authenticate')).toContain('Basic realm="db-fanout"');
        expect(await refused.text()).not.toContain(HTTP_TOKEN);
        expect((await fetch(`${base}${path}`, { headers: bearer('wrong') })).status).toBe(401);
        expect((await fetch(`${base}${path}`, { headers: bearer(METRICS_TOKEN) })).status).toBe(401);
        expect((await fetch(`${base}${path}`, { headers: bearer(HTTP_TOKEN) })).status).toBe(200);
        expect((await fetch(`${base}${path}`, { headers: basic('anyone', HTTP_TOKEN) })).status).toBe(200);
      }
      // Express routes these to the same handlers; they are guarded the same.
      expect((await fetch(`${base}/API/RUNS/`)).status).toBe(401);
    });

    it('answers /health and /metrics only with METRICS_TOKEN', async () => {
      for (const path of ['/health', '/metrics', '/METRICS/']) {
        expect((await fetch(`${base}${path}`)).status).toBe(401);
        expect((await fetch(`${base}${path}`, { headers: bearer(HTTP_TOKEN) })).status).toBe(401);
        expect((await fetch(`${base}${path}`, { headers: bearer(METRICS_TOKEN) })).status).toBe(200);
      }
      expect(await (await fetch(`${base}/metrics`, { headers: bearer(METRICS_TOKEN) })).text()).toContain('db_fanout_');
    });

    it('shows the status page in a browser once the user gives the token at its login prompt', async () => {
      browser = await chromium.launch({
        executablePath: CHROMIUM,
        headless: true,
        args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      });

      // No credentials: Chromium meets the login challenge; headless, nobody answers its prompt, so the
      // navigation ends there and no page is shown.
      const stranger = await browser.newPage();
      await expect(stranger.goto(`${base}/`)).rejects.toThrow('net::ERR_INVALID_AUTH_CREDENTIALS');
      await stranger.close();

      // What the browser sends after its prompt (any user name, the token as the password); the page's
      // own requests for api/runs carry it too, so the grid fills and keeps refreshing.
      const context = await browser.newContext({ httpCredentials: { username: 'ops', password: HTTP_TOKEN } });
      const page = await context.newPage();
      const errors: string[] = [];
      page.on('pageerror', (error) => errors.push(error.message));
      page.on('console', (message) => message.type() === 'error' && errors.push(message.text()));
      const apiStatuses: number[] = [];
      page.on('response', (response) => response.url().endsWith('/api/runs') && apiStatuses.push(response.status()));

      expect((await page.goto(`${base}/`))?.status()).toBe(200);
      await page.locator('#grid tbody tr[data-date="2024-08-01"]').waitFor({ timeout: 15_000 });
      await page.locator('#updated', { hasText: /^updated .*refreshes every 5s$/ }).waitFor({ timeout: 15_000 });
      await until('a second refresh of api/runs', () => apiStatuses.length >= 2, 20_000);
      expect(apiStatuses.every((status) => status === 200)).toBe(true);
      expect(errors).toEqual([]);
      await context.close();

      // A wrong password gets the refusal, not the page.
      const wrong = await browser.newContext({ httpCredentials: { username: 'ops', password: 'wrong' } });
      const refused = await wrong.newPage();
      expect((await refused.goto(`${base}/`))?.status()).toBe(401);
      expect(await refused.locator('#grid').count()).toBe(0);
      await wrong.close();
    }, 90_000);
  });

  it('keeps /health and /metrics open while METRICS_TOKEN is unset, even with HTTP_TOKEN set', async () => {
    const scheduler = await startGuarded('scheduler', { ...namespace.env, SCHEDULE: '0 0 1 1 *', HTTP_TOKEN });
    apps.push(scheduler);
    const base = `http://127.0.0.1:${scheduler.port}`;
    expect((await fetch(`${base}/health`)).status).toBe(200);
    expect((await fetch(`${base}/metrics`)).status).toBe(200);
    expect((await fetch(`${base}/api/runs`)).status).toBe(401);
  }, 60_000);

  it('guards a loader\'s /health and /metrics with METRICS_TOKEN too (HTTP_TOKEN is the scheduler\'s)', async () => {
    const loader = await startGuarded('loader', { ...namespace.env, TARGET_DATABASE_URL: target.url, LOADER_ENV: 'dev', METRICS_TOKEN });
    apps.push(loader);
    const base = `http://127.0.0.1:${loader.port}`;
    for (const path of ['/health', '/metrics']) {
      expect((await fetch(`${base}${path}`)).status).toBe(401);
      expect((await fetch(`${base}${path}`, { headers: bearer(METRICS_TOKEN) })).status).toBe(200);
    }
  }, 60_000);
});
