#!/usr/bin/env node
// @ts-check
/**
 * `npm run demo`: the whole pipeline on this machine's PostgreSQL and NATS. Creates a demo production
 * database and dev/staging/qa targets, runs the scheduler, the dumper and three loaders as real
 * processes, triggers one run, waits for every environment, prints a summary and stops cleanly.
 *
 *   DEMO_PG_URL  admin connection (default postgresql://127.0.0.1:5432/postgres, user from PGUSER/OS)
 *   NATS_URL     default nats://127.0.0.1:4222
 *   --keep       keep the demo databases and the snapshot directory afterwards
 */
const { spawn } = require('node:child_process');
const { mkdtempSync, readFileSync, rmSync } = require('node:fs');
const { tmpdir, userInfo } = require('node:os');
const { join } = require('node:path');
const { Client } = require('pg');
const { appArgs, freePort } = require('./bench-support');

const ROOT = join(__dirname, '..');
const ADMIN_URL = withUser(process.env.DEMO_PG_URL ?? 'postgresql://127.0.0.1:5432/postgres');
const NATS_URL = process.env.NATS_URL ?? 'nats://127.0.0.1:4222';
const KEEP = process.argv.includes('--keep');
const ENVIRONMENTS = ['dev', 'staging', 'qa'];
const TABLES = ['public.customers', 'public.categories', 'public.products', '"Sales"."Order Items"'];
const STREAM = 'DB_FANOUT_DEMO';
const PREFIX = 'demo.';
const sql = (file) => readFileSync(join(ROOT, 'demo', file), 'utf8');

/** Like psql: without a user in the URL, PGUSER or the OS user name. */
function withUser(text) {
  const url = new URL(text);
  if (!url.username) url.username = process.env.PGUSER ?? userInfo().username;
  return url.toString();
}

function dbUrl(name) {
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

async function withClient(url, work) {
  const client = new Client({ connectionString: url });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

async function createDatabases() {
  await withClient(ADMIN_URL, async (client) => {
    for (const name of ['demo_prod', ...ENVIRONMENTS.map((e) => `demo_${e}`)]) {
      await client.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1', [name]);
      await client.query(`DROP DATABASE IF EXISTS ${name}`);
      await client.query(`CREATE DATABASE ${name}`);
    }
  });
  await withClient(dbUrl('demo_prod'), (c) => c.query(sql('schema.sql') + sql('seed.sql')));
  for (const env of ENVIRONMENTS) await withClient(dbUrl(`demo_${env}`), (c) => c.query(sql('schema.sql') + sql('stale.sql')));
}

async function dropDatabases() {
  await withClient(ADMIN_URL, async (client) => {
    for (const name of ['demo_prod', ...ENVIRONMENTS.map((e) => `demo_${e}`)]) await client.query(`DROP DATABASE IF EXISTS ${name}`);
  });
}

/** @returns {Promise<{ name: string, port: number, child: import('node:child_process').ChildProcess, output: string[], exit: Promise<number | null> }>} */
async function startApp(name, app, env) {
  const port = await freePort();
  const child = spawn(process.execPath, appArgs(app), {
    env: { ...process.env, NO_COLOR: '1', NATS_URL, NATS_STREAM: STREAM, NATS_SUBJECT_PREFIX: PREFIX, HTTP_PORT: String(port), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output = [];
  child.stdout.on('data', (d) => output.push(String(d)));
  child.stderr.on('data', (d) => output.push(String(d)));
  const exit = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  const deadline = Date.now() + 20_000;
  for (;;) {
    const ok = await fetch(`http://127.0.0.1:${port}/health`).then((r) => r.ok, () => false);
    if (ok) break;
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`${name} did not become healthy:\n${output.join('')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  console.log(`  started ${name.padEnd(15)} pid ${child.pid}, /health on :${port}`);
  return { name, port, child, output, exit };
}

async function main() {
  const { connect } = await import('@nats-io/transport-node');
  const { jetstreamManager } = await import('@nats-io/jetstream');

  console.log(`db-fanout demo: PostgreSQL ${new URL(ADMIN_URL).host}, NATS ${NATS_URL}\n`);
  const nc = await connect({ servers: NATS_URL }).catch((error) => {
    throw new Error(`cannot reach NATS at ${NATS_URL} (${error.message}); start nats-server -js first`);
  });
  const jsm = await jetstreamManager(nc);
  await jsm.streams.delete(STREAM).catch(() => undefined);

  console.log('1. creating demo_prod (awkward data, 4 tables) and demo_dev, demo_staging, demo_qa (stale data)');
  await createDatabases().catch((error) => {
    throw new Error(`cannot prepare demo databases via ${ADMIN_URL}: ${error.message}`);
  });
  const snapshotDir = mkdtempSync(join(tmpdir(), 'db-fanout-demo-'));

  console.log('2. starting the scheduler, the dumper and one loader per environment');
  const common = { SNAPSHOT_DIR: snapshotDir, RETRY_DELAY: '2s' };
  const apps = [];
  const events = [];
  const sub = nc.subscribe(`${PREFIX}snapshot.>`);
  void (async () => {
    for await (const msg of sub) events.push({ subject: msg.subject.slice(PREFIX.length), data: msg.json() });
  })();
  let failed = false;
  try {
    apps.push(await startApp('scheduler', 'scheduler', common));
    apps.push(await startApp('dumper', 'dumper', { ...common, SOURCE_DATABASE_URL: dbUrl('demo_prod') }));
    for (const env of ENVIRONMENTS) {
      apps.push(await startApp(`loader-${env}`, 'loader', { ...common, LOADER_ENV: env, TARGET_DATABASE_URL: dbUrl(`demo_${env}`) }));
    }

    const date = new Date().toISOString().slice(0, 10);
    console.log(`3. triggering: nats pub ${PREFIX}replication.trigger '{"date":"${date}"}'`);
    const started = Date.now();
    nc.publish(`${PREFIX}replication.trigger`, JSON.stringify({ date }));
    const finished = () => events.filter((e) => e.subject === 'snapshot.loaded' || e.subject === 'snapshot.load.failed' || e.subject === 'snapshot.failed');
    const deadline = Date.now() + 120_000;
    while (finished().length < ENVIRONMENTS.length && !events.some((e) => e.subject === 'snapshot.failed')) {
      if (Date.now() > deadline) throw new Error('timed out after 120 s waiting for the environments');
      await new Promise((r) => setTimeout(r, 100));
    }
    const total = Date.now() - started;

    const ready = events.find((e) => e.subject === 'snapshot.ready')?.data;
    if (!ready) throw new Error(`the dump failed: ${JSON.stringify(events.find((e) => e.subject === 'snapshot.failed')?.data)}`);
    const rows = ready.tables.reduce((s, t) => s + t.rows, 0);
    const mb = ready.tables.reduce((s, t) => s + t.bytes, 0) / 1e6;
    console.log(`\nsnapshot ${ready.snapshotId}: ${ready.tables.length} tables, ${rows} rows, ${mb.toFixed(1)} MB in ${ready.location}\n`);

    const source = {};
    for (const table of TABLES) source[table] = await withClient(dbUrl('demo_prod'), (c) => checksum(c, table));
    const lines = [['environment', 'result', 'rows', 'load time', 'attempts', 'matches prod']];
    for (const env of ENVIRONMENTS) {
      const loaded = events.find((e) => e.subject === 'snapshot.loaded' && e.data.environment === env)?.data;
      const failure = events.find((e) => e.subject === 'snapshot.load.failed' && e.data.environment === env)?.data;
      let matches = 'no';
      if (loaded) {
        const sums = [];
        for (const table of TABLES) sums.push((await withClient(dbUrl(`demo_${env}`), (c) => checksum(c, table))) === source[table]);
        matches = sums.every(Boolean) ? 'yes' : 'NO';
      }
      failed ||= !loaded || matches !== 'yes';
      lines.push([
        env,
        loaded ? 'loaded' : `FAILED: ${failure?.error ?? 'no event'}`,
        String(loaded?.rows ?? '-'),
        loaded ? `${(loaded.durationMs / 1000).toFixed(2)} s` : '-',
        String((loaded ?? failure)?.attempts ?? '-'),
        matches,
      ]);
    }
    const widths = lines[0].map((_, i) => Math.max(...lines.map((l) => l[i].length)));
    for (const [i, line] of lines.entries()) {
      console.log('  ' + line.map((cell, j) => cell.padEnd(widths[j])).join('  '));
      if (i === 0) console.log('  ' + widths.map((w) => '-'.repeat(w)).join('  '));
    }
    console.log(`\ntrigger to last environment: ${(total / 1000).toFixed(2)} s`);
  } finally {
    console.log('\n4. stopping (SIGTERM, in-flight work drains first)');
    for (const app of apps) app.child.kill('SIGTERM');
    for (const app of apps) {
      const code = await app.exit;
      if (code !== 0) {
        failed = true;
        console.log(`  ${app.name} exited with ${code}:\n${app.output.join('')}`);
      }
    }
    sub.unsubscribe();
    await jsm.streams.delete(STREAM).catch(() => undefined);
    await nc.close();
    if (KEEP) {
      console.log(`  kept databases demo_prod, demo_dev, demo_staging, demo_qa and ${snapshotDir}`);
    } else {
      await dropDatabases();
      rmSync(snapshotDir, { recursive: true, force: true });
      console.log('  demo databases and snapshot removed (use --keep to inspect them)');
    }
  }
  if (failed) throw new Error('the demo did not replicate every environment');
  console.log('\ndone: every environment equals production');
}

/** Order-independent digest of a table's content. */
async function checksum(client, table) {
  const { rows } = await client.query(`SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) AS sum FROM ${table} t`);
  return rows[0].sum;
}

main().catch((error) => {
  console.error(`\ndemo failed: ${error.message}`);
  process.exit(1);
});
