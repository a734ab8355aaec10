#!/usr/bin/env node
// @ts-check
/**
 * Where a load's COPY phase goes: the same CSV of pgbench_accounts loaded the way the loader does it
 * (one transaction: TRUNCATE, drop the primary key, COPY ... FREEZE, add the primary key, COMMIT)
 * by different clients, three loads in parallel (or one alone), side by side in rotating order,
 * CHECKPOINT before each, medians over the rounds. Separates PostgreSQL's share (psql, a bare Node
 * stream) from the loader's (sha256 on the way, read buffer size) and the index build's
 * (parallel or serial, and its maintenance_work_mem).
 *
 *   node bench/copy-probe.js [--scale 10] [--rounds 3] [--variants a,b,...]
 *   DEMO_PG_URL as for the bench (default postgresql://127.0.0.1:5432/postgres)
 */
const { spawn, spawnSync } = require('node:child_process');
const { createHash } = require('node:crypto');
const { createReadStream, mkdtempSync, rmSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');
const { Transform } = require('node:stream');
const { pipeline } = require('node:stream/promises');
const { Client } = require('pg');
const { from: copyFrom } = require('pg-copy-streams');

const { arg, dbUrl, PG_ENV, sql } = require('../scripts/bench-support');
const CLK_TCK = 100;

function cpuSeconds(pid) {
  try {
    const stat = require('node:fs').readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return undefined;
  }
}

/**
 * One load, in this process (run as a child so that three loads are three processes, like three
 * loaders). Prints JSON: phase seconds, this process's CPU and its backend's CPU.
 */
async function worker([db, file, client, bufferArg, parallelIndex, settingsArg]) {
  const buffer = Number(bufferArg);
  const pg = new Client({ connectionString: dbUrl(db), application_name: 'copy-probe' });
  await pg.connect();
  const [{ pid }] = (await pg.query('SELECT pg_backend_pid() AS pid')).rows;
  const backendCpu0 = cpuSeconds(pid) ?? 0;
  const cpu0 = process.cpuUsage();
  const t = [performance.now()];
  await pg.query('BEGIN');
  await pg.query("SET LOCAL maintenance_work_mem = '256MB'");
  if (parallelIndex !== 'server') await pg.query(`SET LOCAL max_parallel_maintenance_workers = ${Number(parallelIndex)}`);
  for (const s of settingsArg === '-' ? [] : settingsArg.split(';')) await pg.query(`SET LOCAL ${s}`);
  await pg.query('ALTER TABLE pgbench_accounts DROP CONSTRAINT IF EXISTS pgbench_accounts_pkey');
  await pg.query('TRUNCATE ONLY pgbench_accounts');
  t.push(performance.now());
  const copy = pg.query(copyFrom('COPY pgbench_accounts (aid, bid, abalance, filler) FROM STDIN (FORMAT csv, HEADER, FREEZE)'));
  const stages = [createReadStream(file, { highWaterMark: buffer })];
  if (client === 'digest') {
    const hash = createHash('sha256');
    stages.push(new Transform({ transform(chunk, _e, cb) { hash.update(chunk); cb(null, chunk); } }));
  }
  await pipeline(...stages, copy);
  t.push(performance.now());
  await pg.query('ALTER TABLE pgbench_accounts ADD PRIMARY KEY (aid)');
  t.push(performance.now());
  await pg.query('COMMIT');
  t.push(performance.now());
  const cpu = process.cpuUsage(cpu0);
  const backendCpu = (cpuSeconds(pid) ?? 0) - backendCpu0;
  await pg.end();
  const d = (i) => (t[i + 1] - t[i]) / 1000;
  process.stdout.write(JSON.stringify({ prepare: d(0), copy: d(1), indexes: d(2), commit: d(3), clientCpu: (cpu.user + cpu.system) / 1e6, backendCpu }));
}

/** psql's \copy, as a user would type it; psql's \timing gives each command's time. */
function psqlLoad(db, file, parallelIndex) {
  const commands = [
    'BEGIN', "SET LOCAL maintenance_work_mem = '256MB'",
    ...(parallelIndex === 'server' ? [] : [`SET LOCAL max_parallel_maintenance_workers = ${parallelIndex}`]),
    'ALTER TABLE pgbench_accounts DROP CONSTRAINT IF EXISTS pgbench_accounts_pkey', 'TRUNCATE ONLY pgbench_accounts',
    `\\copy pgbench_accounts (aid, bid, abalance, filler) from '${file}' (format csv, header, freeze)`,
    'ALTER TABLE pgbench_accounts ADD PRIMARY KEY (aid)', 'COMMIT',
  ];
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', db, '-c', '\\timing on', ...commands.flatMap((c) => ['-c', c])], { env: PG_ENV, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(err));
      const ms = [...out.matchAll(/Time: ([\d.]+) ms/g)].map((m) => Number(m[1]) / 1000);
      const at = (prefix) => ms[commands.findIndex((c) => c.startsWith(prefix))];
      resolve({ total: (performance.now() - started) / 1000, copy: at('\\copy'), indexes: at('ALTER TABLE pgbench_accounts ADD'), commit: at('COMMIT') });
    });
  });
}

function nodeLoad(db, file, client, buffer, parallelIndex, settings) {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(process.execPath, [__filename, '--worker', db, file, client, String(buffer), String(parallelIndex), settings || '-'], { env: PG_ENV, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.on('exit', (code) => (code === 0 ? resolve({ total: (performance.now() - started) / 1000, ...JSON.parse(out) }) : reject(new Error(`worker exited ${code}`))));
  });
}

const VARIANTS = {
  psql: { what: 'psql \\copy (FREEZE)', run: (db, f) => psqlLoad(db, f, '0') },
  bare: { what: 'Node, 1 MB reads, no digest', run: (db, f) => nodeLoad(db, f, 'bare', 1 << 20, 0) },
  loader: { what: 'Node, 1 MB reads + sha256, serial index builds in 1 GB (the loader today)', run: (db, f) => nodeLoad(db, f, 'digest', 1 << 20, 0, "maintenance_work_mem = '1GB'") },
  serial256: { what: 'the loader with serial index builds in 256 MB', run: (db, f) => nodeLoad(db, f, 'digest', 1 << 20, 0) },
  buf64k: { what: 'Node, 64 KB reads + sha256', run: (db, f) => nodeLoad(db, f, 'digest', 1 << 16, 0) },
  buf256k: { what: 'Node, 256 KB reads + sha256', run: (db, f) => nodeLoad(db, f, 'digest', 1 << 18, 0) },
  buf4m: { what: 'Node, 4 MB reads + sha256', run: (db, f) => nodeLoad(db, f, 'digest', 1 << 22, 0) },
  pmw: { what: 'the loader with max_parallel_maintenance_workers from the server, 256 MB', run: (db, f) => nodeLoad(db, f, 'digest', 1 << 20, 'server') },
  async: { what: 'the loader with synchronous_commit = off', run: (db, f) => nodeLoad(db, f, 'digest', 1 << 20, 0, 'synchronous_commit = off') },
};

const median = (v) => {
  const s = [...v].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

async function main() {
  if (process.argv[2] === '--worker') return worker(process.argv.slice(3));
  const scale = Number(arg('scale', '10'));
  const rounds = Number(arg('rounds', '3'));
  const parallel = Number(arg('parallel', '3'));
  const variants = arg('variants', Object.keys(VARIANTS).join(',')).split(',');
  for (const v of variants) if (!VARIANTS[v]) throw new Error(`unknown variant ${v} (known: ${Object.keys(VARIANTS).join(', ')})`);
  const source = `bench_src_s${scale}`;
  if (!(await sql('postgres', `SELECT 1 FROM pg_database WHERE datname = '${source}'`)).length) throw new Error(`${source} missing: run npm run bench --scale ${scale} once first`);
  const dir = mkdtempSync(join(tmpdir(), 'copy-probe-'));
  const file = join(dir, 'accounts.csv');
  spawnSync('psql', ['-X', '-q', '-d', source, '-c', `\\copy pgbench_accounts (aid, bid, abalance, filler) to '${file}' csv header`], { env: PG_ENV });
  const dbs = Array.from({ length: parallel }, (_, i) => `bench_probe_${i + 1}`);
  for (const db of dbs) {
    await sql('postgres', `DROP DATABASE IF EXISTS ${db}`);
    await sql('postgres', `CREATE DATABASE ${db}`);
    spawnSync('pgbench', ['-i', '-q', '-s', '1', db], { env: PG_ENV });
  }
  const results = Object.fromEntries(variants.map((v) => [v, []]));
  try {
    for (let round = 0; round < rounds; round++) {
      const order = [...variants.slice(round % variants.length), ...variants.slice(0, round % variants.length)];
      const line = [];
      for (const v of order) {
        await sql('postgres', 'CHECKPOINT');
        const [{ lsn }] = await sql('postgres', 'SELECT pg_current_wal_lsn() AS lsn');
        const started = performance.now();
        const loads = await Promise.all(dbs.map((db) => VARIANTS[v].run(db, file)));
        const wall = (performance.now() - started) / 1000;
        const [{ wal }] = await sql('postgres', `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '${lsn}')::bigint AS wal`);
        results[v].push({ wall, wal: Number(wal), loads });
        line.push(`${v} ${wall.toFixed(2)}s`);
      }
      console.log(`round ${round + 1}: ${line.join(', ')}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
    for (const db of dbs) await sql('postgres', `DROP DATABASE IF EXISTS ${db}`);
  }
  console.log(`\n${parallel} load(s) in parallel, scale ${scale}, ${rounds} rounds, medians (range of the wall time)\n`);
  console.log('| variant | wall s | range | copy s | index s | commit s | client CPU s | backend CPU s | WAL MB per load |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const v of variants) {
    const r = results[v];
    const per = (k) => { const x = r.flatMap((x) => x.loads.map((l) => l[k])).filter((n) => n !== undefined); return x.length ? median(x).toFixed(2) : '-'; };
    const walls = r.map((x) => x.wall);
    console.log(`| ${VARIANTS[v].what} | ${median(walls).toFixed(2)} | ${Math.min(...walls).toFixed(2)}-${Math.max(...walls).toFixed(2)} | ${per('copy')} | ${per('indexes')} | ${per('commit')} | ${per('clientCpu')} | ${per('backendCpu')} | ${(median(r.map((x) => x.wal)) / parallel / 1e6).toFixed(0)} |`);
  }
}

main().catch((error) => {
  console.error(`copy-probe failed: ${error.message}`);
  process.exit(1);
});
