import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Browser, chromium, type Locator, type Page, type Route } from 'playwright-core';
import type { RunningApp } from './support/apps';
import { CHROMIUM } from './support/chromium';
import { plainPublish } from './support/nats';
import { PipelineHarness, until } from './support/pipeline';

/** `UPDATE_SCREENSHOT=1` also writes the README's picture. */
const README_SCREENSHOT = join(__dirname, '..', 'docs', 'status-page.png');

interface Step {
  state: string;
  attempts: number;
  error?: string;
  location?: string;
  drift?: { skippedTables: string[]; leftOutColumns: string[]; defaultedColumns: string[] };
}
interface Run {
  date: string;
  dump: Step;
  loads: Record<string, Step>;
}

type Rgb = [number, number, number];
function rgb(css: string): Rgb {
  const match = /^rgba?\((\d+), (\d+), (\d+)/.exec(css);
  if (!match) throw new Error(`not a color: ${css}`);
  return [Number(match[1]), Number(match[2]), Number(match[3])];
}
const background = async (locator: Locator): Promise<Rgb> => rgb(await locator.evaluate((el) => getComputedStyle(el).backgroundColor));
/** The hue family of a color, as a person would name it. */
function family([r, g, b]: Rgb): string {
  if (Math.max(r, g, b) - Math.min(r, g, b) < 24) return 'grey';
  if (b > r && b > g) return 'blue';
  if (g > r && g > b) return 'green';
  if (r > g && r > b) return g > b + 60 ? 'orange' : 'red';
  return 'other';
}

/** The scheduler's `GET /`: the run grid in a real browser, refreshing itself from `GET /api/runs`. */
describe('the status page on GET /', () => {
  let pipeline: PipelineHarness;
  let scheduler: RunningApp;
  let browser: Browser;
  let page: Page;
  let shots: string;
  const browserErrors: string[] = [];

  beforeAll(async () => {
    shots = mkdtempSync(join(tmpdir(), 'db-fanout-statuspage-shots-'));
    pipeline = await PipelineHarness.create('statuspage', {
      environments: ['dev', 'staging', 'qa'],
      // The same missing column: staging's load fails on it (SCHEMA_DRIFT=fail), qa's leaves it out.
      targetSql: { staging: 'ALTER TABLE public.products DROP COLUMN attrs;', qa: 'ALTER TABLE public.products DROP COLUMN attrs;' },
    });
    scheduler = await pipeline.fleet.start('scheduler', { ...pipeline.commonEnv, SCHEDULE: '0 0 1 1 *' });
    await pipeline.startDumper();
    await pipeline.startLoader('dev');
    await pipeline.startLoader('staging');
    await pipeline.startLoader('qa', { SCHEMA_DRIFT: 'common-columns' });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    page = await browser.newPage({ viewport: { width: 900, height: 300 }, deviceScaleFactor: 1 });
    // Script errors and CSP refusals (the page's own script and style must be the ones its policy admits).
    page.on('pageerror', (error) => browserErrors.push(`pageerror: ${error.message}`));
    page.on('console', (message) => {
      if (message.type() === 'error') browserErrors.push(`console: ${message.text()}`);
    });
  }, 90_000);

  afterAll(async () => {
    await browser?.close();
    await pipeline?.cleanup();
    if (shots) rmSync(shots, { recursive: true, force: true });
  });

  /** A failed wait says what the apps logged. */
  async function withLogs<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (error) {
      throw new Error(`${(error as Error).message}\n${pipeline.fleet.logs()}`);
    }
  }
  const base = () => `http://127.0.0.1:${scheduler.port}`;
  /**
   * The run of `date` per `GET /api/runs`; undefined when the request gets no answer in 3 s (with
   * @nats-io/kv 3.4.0, a `kv.keys()` listing that overlaps a ledger write can stall that request).
   */
  const runOf = async (date: string): Promise<Run | undefined> => {
    try {
      const response = await fetch(`${base()}/api/runs`, { signal: AbortSignal.timeout(3_000) });
      return ((await response.json()) as Run[]).find((run) => run.date === date);
    } catch (error) {
      if ((error as Error).name === 'TimeoutError') return undefined;
      throw error;
    }
  };
  const row = (date: string) => page.locator(`#grid tbody tr[data-date="${date}"]`);
  const dumpCell = (date: string) => row(date).locator('td[data-step="dump"]');
  const envCell = (date: string, env: string) => row(date).locator(`td[data-env="${env}"]`);

  it('is one HTML document with no external assets, next to /health, /metrics and /api/runs', async () => {
    const response = await fetch(`${base()}/`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(response.headers.get('content-security-policy')).toContain("default-src 'none'");
    const html = await response.text();
    expect(html).toMatch(/^<!doctype html>/);
    expect(html).toContain('<script>');
    expect(html).not.toMatch(/\b(src|href)\s*=\s*["']?(https?:)?\/\//i); // no CDN, no other host
    expect(html).not.toMatch(/<(link|script)[^>]+(stylesheet|src=)/i); // no linked style sheet or script

    expect((await fetch(`${base()}/health`)).status).toBe(200);
    const metrics = await fetch(`${base()}/metrics`);
    expect(metrics.headers.get('content-type')).toContain('text/plain');
    expect(await metrics.text()).toContain('db_fanout_');
    const runs = await fetch(`${base()}/api/runs`);
    expect(runs.headers.get('content-type')).toContain('application/json');
    expect(await runs.json()).toEqual([]);
  });

  it("shows a run's dump and each environment with its state, duration and color; hover and click give the error", async () => {
    await pipeline.trigger('2024-06-01');
    await withLogs(() =>
      until(
        'dev and qa success and staging failed in /api/runs',
        async () => {
          const run = await runOf('2024-06-01');
          return run?.loads.dev?.state === 'success' && run?.loads.qa?.state === 'success' && run?.loads.staging?.state === 'failed';
        },
        30_000,
      ),
    );
    const run = (await runOf('2024-06-01'))!;
    expect(run.loads.staging.error).toContain('public.products."attrs"');

    await page.goto(`${base()}/`);
    await row('2024-06-01').waitFor({ timeout: 10_000 });

    expect(await page.locator('#grid thead th').allTextContents()).toEqual(['date', 'dump', 'dev', 'qa', 'staging']);
    for (const [cell, state] of [
      [dumpCell('2024-06-01'), 'success'],
      [envCell('2024-06-01', 'dev'), 'success'],
      [envCell('2024-06-01', 'qa'), 'success'],
      [envCell('2024-06-01', 'staging'), 'failed'],
    ] as const) {
      expect(await cell.getAttribute('data-state')).toBe(state);
      expect(await cell.locator('.state').textContent()).toBe(state);
      expect(await cell.locator('.meta').textContent()).toMatch(/^(\d+ms|\d+\.\ds)$/); // endedAt - startedAt; one attempt, so no "tries"
    }

    // Colors: success green, failed red, and the legend shows all five states as specified.
    expect(family(await background(dumpCell('2024-06-01')))).toBe('green');
    expect(await background(envCell('2024-06-01', 'dev'))).toEqual(await background(dumpCell('2024-06-01')));
    expect(family(await background(envCell('2024-06-01', 'staging')))).toBe('red');
    const legend: Record<string, string> = {};
    for (const state of ['queued', 'running', 'up_for_retry', 'success', 'failed']) {
      legend[state] = family(await background(page.locator(`#legend .s-${state}`)));
    }
    expect(legend).toEqual({ queued: 'grey', running: 'blue', up_for_retry: 'orange', success: 'green', failed: 'red' });

    // Hover: the title holds the full error and the start and end times.
    const staging = envCell('2024-06-01', 'staging');
    const title = (await staging.getAttribute('title'))!;
    expect(title).toContain(run.loads.staging.error);
    expect(title).toMatch(/started: 2\d{3}-\d\d-\d\d \d\d:\d\d:\d\d/);
    expect(title).toMatch(/ended: 2\d{3}-\d\d-\d\d \d\d:\d\d:\d\d/);
    expect(await dumpCell('2024-06-01').getAttribute('title')).not.toContain('error');
    // The dump's snapshot and where it is kept, as snapshot.ready named it (a directory here; nats:// or s3:// in those stores).
    const location = String(pipeline.readyFor('2024-06-01')!.location);
    expect(run.dump.location).toBe(location);
    expect(await dumpCell('2024-06-01').getAttribute('title')).toContain(`location: ${location}`);

    // SCHEMA_DRIFT=common-columns: qa loaded without the column staging failed on, and says so in
    // its cell, its title and its details; an environment whose schema matched shows no drift.
    expect(run.loads.qa.drift).toEqual({ skippedTables: [], leftOutColumns: ['public.products."attrs"'], defaultedColumns: [] });
    const qa = envCell('2024-06-01', 'qa');
    expect(await qa.locator('.drift').textContent()).toBe('drift: 1 column left out');
    expect(await qa.getAttribute('title')).toContain('\ndrift, left-out columns: public.products."attrs"');
    expect(await envCell('2024-06-01', 'dev').locator('.drift').count()).toBe(0);
    expect(await envCell('2024-06-01', 'dev').getAttribute('title')).not.toContain('drift');

    // Click: the details line below the grid shows the same.
    expect(await page.locator('#details').textContent()).toBe('Click a cell for its details.');
    await qa.click();
    expect(await page.locator('#details .facts').textContent()).toContain('2024-06-01 · qa · success');
    expect(await page.locator('#details ul.drift li').allTextContents()).toEqual(['left-out columns: public.products."attrs"']);
    await staging.click();
    expect(await page.locator('#details ul.drift').count()).toBe(0);
    const details = (await page.locator('#details').textContent())!;
    expect(details).toContain(run.loads.staging.error);
    expect(details).toContain('2024-06-01 · staging · failed');
    expect(details).toMatch(/started: .* · ended: /);
    expect(await staging.getAttribute('class')).toContain('selected');
    expect(browserErrors).toEqual([]);
  }, 60_000);

  it('shows a new run by itself, without reloading, keeping the selected cell', async () => {
    await page.evaluate(() => Object.assign(window, { sameDocument: true }));
    await pipeline.trigger('2024-06-02');
    await withLogs(() => envCell('2024-06-02', 'staging').and(page.locator('[data-state="failed"]')).waitFor({ timeout: 40_000 }));
    await envCell('2024-06-02', 'dev').and(page.locator('[data-state="success"]')).waitFor({ timeout: 10_000 });

    expect(await page.evaluate(() => (window as unknown as { sameDocument?: boolean }).sameDocument)).toBe(true);
    expect(await page.locator('#grid tbody tr').evaluateAll((rows) => rows.map((tr) => (tr as HTMLElement).dataset.date))).toEqual([
      '2024-06-02',
      '2024-06-01',
    ]);
    expect(await dumpCell('2024-06-02').getAttribute('data-state')).toBe('success');
    expect(await envCell('2024-06-01', 'staging').getAttribute('class')).toContain('selected');
    expect(await page.locator('#details').textContent()).toContain('2024-06-01 · staging · failed');
    expect(await page.locator('#updated').textContent()).toMatch(/^updated .*refreshes every 5s$/);

    const file = join(shots, 'status-page.png');
    await page.screenshot({ path: file, fullPage: true });
    const png = readFileSync(file);
    expect(png.length).toBeGreaterThan(1_000);
    expect(png.subarray(1, 4).toString()).toBe('PNG');
    if (process.env.UPDATE_SCREENSHOT === '1') copyFileSync(file, README_SCREENSHOT);
    expect(browserErrors).toEqual([]);
  }, 60_000);

  it('keeps its grid when a refresh gets no answer, gives that request up and recovers', async () => {
    const held: Route[] = [];
    await page.route('**/api/runs', (route) => void held.push(route)); // never answered
    await page.locator('#updated', { hasText: 'could not refresh (no answer in 10s), retrying every 5s' }).waitFor({ timeout: 25_000 });
    expect(await page.locator('#updated').getAttribute('class')).toBe('stale');
    expect(await page.locator('#grid tbody tr').count()).toBe(2);
    expect(held.length).toBeGreaterThanOrEqual(1);

    await page.unroute('**/api/runs');
    await page.locator('#updated', { hasText: /^updated / }).waitFor({ timeout: 10_000 });
    expect(await page.locator('#updated').getAttribute('class')).toBe('');
    expect(await page.locator('#grid tbody tr').count()).toBe(2);
    expect(browserErrors.filter((e) => !/api\/runs|Failed to load resource/.test(e))).toEqual([]);
    browserErrors.length = 0;
  }, 40_000);

  it('puts names and errors from messages into the page as text, never as markup', async () => {
    // Anyone who may publish on the stream can put any error into the ledger. An environment name
    // no loader can have (LOADER_ENV is [a-z0-9-]+) is not taken at all.
    const forgedEnvironment = '<img src=x onerror="window.injected=1">';
    const environment = 'uat-2';
    const error = '</pre><script>window.injected=2</script> & "quoted" <b>bold</b>';
    for (const name of [forgedEnvironment, environment]) {
      await plainPublish(
        `${pipeline.namespace.prefix}snapshot.load.failed`,
        JSON.stringify({ snapshotId: '20240603-0badc0de', environment: name, error, attempts: 3 }),
        undefined,
        pipeline.namespace.url,
      );
    }
    const cell = row('2024-06-03').locator('td[data-state="failed"]');
    await cell.waitFor({ timeout: 15_000 });

    expect(await page.locator('#grid thead th').allTextContents()).toContain(environment);
    expect(await page.locator('#grid thead th').allTextContents()).not.toContain(forgedEnvironment);
    expect(await cell.getAttribute('title')).toContain(`error: ${error}`);
    expect(await cell.locator('.meta').textContent()).toBe('3 tries');
    await cell.click();
    expect(await page.locator('#details .error').textContent()).toBe(`error: ${error}`);

    // The same for the names in a load's drift.
    const column = 'public.t."<img src=x onerror=window.injected=3>"';
    await plainPublish(
      `${pipeline.namespace.prefix}snapshot.loaded`,
      JSON.stringify({ snapshotId: '20240604-0badc0de', environment: 'dev', rows: 1, durationMs: 1, attempts: 1, drift: { skippedTables: ['<b>t</b>'], leftOutColumns: [column], defaultedColumns: [], unsetSequences: ['public."<i>t_id_seq</i>"'] } }),
      undefined,
      pipeline.namespace.url,
    );
    const drifted = envCell('2024-06-04', 'dev');
    await drifted.and(page.locator('[data-state="success"]')).waitFor({ timeout: 15_000 });
    expect(await drifted.locator('.drift').textContent()).toBe('drift: 1 table skipped, 1 column left out, 1 sequence left unset');
    expect(await drifted.getAttribute('title')).toContain(`drift, skipped tables: <b>t</b>\ndrift, left-out columns: ${column}\ndrift, sequences left unset: public."<i>t_id_seq</i>"`);
    await drifted.click();
    expect(await page.locator('#details ul.drift li').allTextContents()).toEqual(['skipped tables: <b>t</b>', `left-out columns: ${column}`, 'sequences left unset: public."<i>t_id_seq</i>"']);
    expect(await page.locator('#grid img, #grid script, #grid b, #grid i, #details script, #details b, #details i, #details img').count()).toBe(0);
    expect(await page.evaluate(() => (window as unknown as { injected?: number }).injected)).toBeUndefined();
    expect(browserErrors).toEqual([]);
  }, 30_000);

  it('marks a load a `db-fanout reload` asked for, and one whose message came again after its loader died', async () => {
    const publish = (subject: string, body: object) => plainPublish(`${pipeline.namespace.prefix}${subject}`, JSON.stringify(body), undefined, pipeline.namespace.url);
    const snapshotId = '20240605-0badc0de';
    await publish('snapshot.loaded', { snapshotId, environment: 'dev', rows: 1, durationMs: 1, attempts: 1, reloadSequence: 57 });
    await publish('snapshot.load.started', { snapshotId, environment: 'qa', attempt: 1, delivery: 2, startedAt: new Date().toISOString() });

    const reloaded = envCell('2024-06-05', 'dev');
    await reloaded.and(page.locator('[data-state="success"]')).waitFor({ timeout: 15_000 });
    expect(await reloaded.locator('.meta').textContent()).toBe('reload #57');
    expect(await reloaded.getAttribute('title')).toContain('reload: #57 (asked for by db-fanout reload)');
    const again = envCell('2024-06-05', 'qa');
    await again.and(page.locator('[data-state="running"]')).waitFor({ timeout: 15_000 });
    expect(await again.locator('.meta').textContent()).toMatch(/\u2026 \u00b7 delivery 2$/);
    await again.click();
    expect(await page.locator('#details .facts').textContent()).toContain('delivery: 2 (the message came again after its worker stopped)');
    expect(browserErrors).toEqual([]);
  }, 30_000);
});
