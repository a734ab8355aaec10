#!/usr/bin/env node
// @ts-check
/**
 * Part of `npm run bench`: the dump (trigger to snapshot.ready) and the load of a pgbench source
 * without rules and with DUMP_RULES masking two columns of pgbench_accounts (`filler: hash`,
 * `abalance: null`), alternating, median of the rounds. Writes bench/results/masking-*.json.
 *
 *   --scale N     pgbench scale of the source (default 10: 1M rows)
 *   --rounds N    rounds per variant (default 5, at least 3)
 *   DEMO_PG_URL / NATS_URL as for the demo.
 */
const { spawn } = require('node:child_process');
const { mkdirSync, mkdtempSync, rmSync, writeFileSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');
const { ROOT, arg, NATS_URL, dbUrl, sql, recreate, pgbenchInit, median, appArgs } = require('./bench-support');

const SCALE = Number(arg('scale', '10'));
const ROUNDS = Math.max(3, Number(arg('rounds', '5')));
const SOURCE = `bench_mask_src_s${SCALE}`;
const VARIANTS = ['plain', 'masked'];
const RULES = `strict: false
tables:
  public.pgbench_accounts: { filler: hash, abalance: null }
`;

async function main() {
  const { connect } = await import('@nats-io/transport-node');
  const { jetstreamManager } = await import('@nats-io/jetstream');
  const dir = mkdtempSync(join(tmpdir(), 'db-fanout-bench-masking-'));
  const rulesFile = join(dir, 'rules.yaml');
  writeFileSync(rulesFile, RULES);
  const nc = await connect({ servers: NATS_URL });
  const jsm = await jetstreamManager(nc);
  const children = [];
  try {
    console.log(`masking bench: pgbench scale ${SCALE}, ${ROUNDS} rounds per variant, alternating`);
    if (!(await sql('postgres', `SELECT 1 FROM pg_database WHERE datname = '${SOURCE}'`)).length) {
      await recreate(SOURCE);
      pgbenchInit(SOURCE, SCALE);
    }
    const events = [];
    let port = 3950;
    const start = async (app, variant, env) => {
      const prefix = `benchmask${variant}.`;
      const child = spawn(process.execPath, appArgs(app), {
        env: { ...process.env, NO_COLOR: '1', NATS_URL, NATS_STREAM: `DB_FANOUT_BENCH_MASK_${variant.toUpperCase()}`, NATS_SUBJECT_PREFIX: prefix, HTTP_PORT: String(++port), SNAPSHOT_DIR: join(dir, variant), SNAPSHOT_RETENTION: '1m', DUMP_JOBS: '2', ...env },
        stdio: ['ignore', 'ignore', 'inherit'],
      });
      children.push(child);
      for (let i = 0; i < 300; i++) {
        if (await fetch(`http://127.0.0.1:${port}/health`).then((r) => r.ok, () => false)) return;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`${app} (${variant}) did not start`);
    };
    for (const variant of VARIANTS) {
      mkdirSync(join(dir, variant));
      await jsm.streams.delete(`DB_FANOUT_BENCH_MASK_${variant.toUpperCase()}`).catch(() => undefined);
      const sub = nc.subscribe(`benchmask${variant}.snapshot.>`);
      void (async () => {
        for await (const m of sub) events.push({ at: performance.now(), variant, subject: m.subject.replace(/^[^.]+\./, ''), data: m.json() });
      })();
      const target = `bench_mask_${variant}_dev`;
      await recreate(target);
      pgbenchInit(target, 1);
      await start('dumper', variant, { SOURCE_DATABASE_URL: dbUrl(SOURCE), ...(variant === 'masked' ? { DUMP_RULES: rulesFile, MASKING_KEY: 'bench masking key, not a secret' } : {}) });
      await start('loader', variant, { LOADER_ENV: 'dev', TARGET_DATABASE_URL: dbUrl(target) });
    }

    const results = { plain: { dump: [], load: [] }, masked: { dump: [], load: [] } };
    for (let round = 1; round <= ROUNDS; round++) {
      for (const variant of VARIANTS) {
        const date = `2024-03-${String(round).padStart(2, '0')}`;
        const from = events.length;
        const startedAt = performance.now();
        nc.publish(`benchmask${variant}.replication.trigger`, JSON.stringify({ date }));
        let ready;
        let loaded;
        while (!loaded) {
          const mine = events.slice(from).filter((e) => e.variant === variant);
          const failed = mine.find((e) => e.subject.endsWith('failed'));
          if (failed) throw new Error(`${variant} failed: ${JSON.stringify(failed.data)}`);
          ready = mine.find((e) => e.subject === 'snapshot.ready');
          loaded = mine.find((e) => e.subject === 'snapshot.loaded');
          await new Promise((r) => setTimeout(r, 5));
        }
        results[variant].dump.push((ready.at - startedAt) / 1000);
        results[variant].load.push(loaded.data.durationMs / 1000);
        console.log(`  round ${round} ${variant.padEnd(6)}: dump ${results[variant].dump.at(-1).toFixed(2)} s, load ${results[variant].load.at(-1).toFixed(2)} s`);
      }
    }
    const masked = await sql('bench_mask_masked_dev', 'SELECT count(*) FILTER (WHERE abalance IS NULL)::int AS nulls, count(DISTINCT filler)::int AS fillers, min(length(filler))::int AS len FROM pgbench_accounts');
    const summary = Object.fromEntries(VARIANTS.map((v) => [v, { dumpMedian: median(results[v].dump), loadMedian: median(results[v].load) }]));
    const ratio = summary.masked.dumpMedian / summary.plain.dumpMedian;
    console.log('\n| dump of pgbench_accounts | median dump (s) | median load (s) |\n|---|---|---|');
    console.log(`| without rules | ${summary.plain.dumpMedian.toFixed(2)} | ${summary.plain.loadMedian.toFixed(2)} |`);
    console.log(`| \`filler: hash\`, \`abalance: null\` | ${summary.masked.dumpMedian.toFixed(2)} | ${summary.masked.loadMedian.toFixed(2)} |`);
    console.log(`\nmasked / unmasked dump: ${ratio.toFixed(2)}x; in the masked environment: ${masked[0].nulls} NULL balances, fillers of ${masked[0].len} characters`);
    mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
    writeFileSync(join(ROOT, 'bench', 'results', `masking-${new Date().toISOString().replace(/[:.]/g, '-')}.json`), `${JSON.stringify({ scale: SCALE, rounds: ROUNDS, results, summary, ratio }, null, 2)}\n`);
  } finally {
    for (const child of children) child.kill('SIGTERM');
    await Promise.all(children.map((child) => new Promise((r) => (child.exitCode !== null ? r(undefined) : child.on('exit', r)))));
    for (const variant of VARIANTS) await jsm.streams.delete(`DB_FANOUT_BENCH_MASK_${variant.toUpperCase()}`).catch(() => undefined);
    await nc.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
