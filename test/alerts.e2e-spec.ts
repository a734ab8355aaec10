import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { RunningApp } from './support/apps';
import { PipelineHarness, until } from './support/pipeline';

interface Received {
  method?: string;
  headers: IncomingHttpHeaders;
  body: Record<string, unknown>;
}

/** ALERT_WEBHOOK_URL: the scheduler POSTs every failure as JSON; the pipeline never waits for it. */
describe('failure alerts to ALERT_WEBHOOK_URL', () => {
  const received: Received[] = [];
  let server: Server;
  let webhookUrl: string;
  let pipeline: PipelineHarness;
  let scheduler: RunningApp;

  beforeAll(async () => {
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        received.push({ method: req.method, headers: req.headers, body: JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown> });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };
    webhookUrl = `http://db-fanout:wh-s3cret@127.0.0.1:${port}/alerts`;

    pipeline = await PipelineHarness.create('alerts', {
      environments: ['dev', 'staging'],
      targetSql: { dev: 'ALTER TABLE public.products DROP COLUMN attrs;' },
    });
    scheduler = await pipeline.fleet.start('scheduler', { ...pipeline.commonEnv, SCHEDULE: '0 0 1 1 *', ALERT_WEBHOOK_URL: webhookUrl });
    await pipeline.startDumper();
    await pipeline.startLoader('dev');
    await pipeline.startLoader('staging');
  });

  afterAll(async () => {
    await pipeline?.cleanup();
    server?.closeAllConnections();
    await new Promise((resolve) => server?.close(resolve));
  });

  it('POSTs exactly one snapshot.load.failed naming the environment and the column; the successful environment posts nothing', async () => {
    await pipeline.trigger('2024-07-01');
    await pipeline.events.waitFor('dev to fail and staging to load', (c) => c.of('snapshot.load.failed').length === 1 && c.of('snapshot.loaded').length === 1);
    await until('the alert', () => received.length >= 1, 15_000);
    await new Promise((resolve) => setTimeout(resolve, 1_500)); // room for a wrong second POST to arrive

    expect(received).toHaveLength(1);
    const [alert] = received;
    expect(alert.method).toBe('POST');
    expect(alert.headers['content-type']).toBe('application/json');
    expect(alert.headers.authorization).toBe(`Basic ${Buffer.from('db-fanout:wh-s3cret').toString('base64')}`);
    const snapshotId = pipeline.readyFor('2024-07-01')?.snapshotId;
    expect(alert.body).toMatchObject({ event: 'snapshot.load.failed', snapshotId, environment: 'dev', attempts: 1 });
    expect(alert.body.error).toContain('public.products."attrs"');
    expect(Object.keys(alert.body).sort()).toEqual(['at', 'attempts', 'environment', 'error', 'event', 'snapshotId']);
    expect(new Date(alert.body.at as string).toISOString()).toBe(alert.body.at);
    expect(pipeline.loadedIn('staging')).toHaveLength(1);

    expect(scheduler.output).toContain('alert sent: snapshot.load.failed dev');
    // The webhook is named by scheme and host only (no credentials, no path).
    expect(scheduler.output).toContain(`failures are POSTed to http://127.0.0.1:${new URL(webhookUrl).port}/...`);
    expect(scheduler.output).not.toContain('/alerts');
    expect(scheduler.output).not.toContain('wh-s3cret');
  });

  it('without ALERT_WEBHOOK_URL the scheduler starts fine and has no alerts check', async () => {
    const plain = await pipeline.fleet.start('scheduler', { ...pipeline.commonEnv, SCHEDULE: '0 0 1 1 *' }, 'scheduler-without-alerts');
    const health = (await (await fetch(`http://127.0.0.1:${plain.port}/health`)).json()) as { status: string; checks: Record<string, unknown> };
    expect(health.status).toBe('ok');
    expect(Object.keys(health.checks)).not.toContain('alerts');
    expect(plain.output).not.toMatch(/\[Alerts\]|POSTed to/);
    expect(await plain.stop()).toBe(0);
  });
});
