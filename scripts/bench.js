#!/usr/bin/env node
// @ts-check
/**
 * `npm run bench`: refresh three environments from a pgbench source, side by side with the tools
 * people use today, on this machine's PostgreSQL and NATS. Prints a table, writes bench/results/*.json.
 *
 *   --scale N     pgbench scale of the source (default 10: 1M rows, ~96 MB of CSV)
 *   --rounds N    rounds per contender, alternating; the best is reported (default 3)
 *   --only a,b    contenders to run: fanout, psql, pgcopydb, pgdump (default all)
 *   DEMO_PG_URL / NATS_URL as for the demo.
 */
const { spawn, spawnSync } = require('node:child_process');
const { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } = require('node:fs');
const { cpus, tmpdir, totalmem, userInfo } = require('node:os');
const { join } = require('node:path');
const { Client } = require('pg');

const ROOT = join(__dirname, '..');
const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
};
const SCALE = Number(arg('scale', '10'));
const ROUNDS = Number(arg('rounds', '3'));
const ONLY = arg('only', 'fanout,psql,pgcopydb,pgdump').split(',');
const ENVS = ['dev', 'staging', 'qa'];
const NATS_URL = process.env.NATS_URL ?? 'nats://127.0.0.1:4222';
const ADMIN = (() => {
  const url = new URL(process.env.DEMO_PG_URL ?? 'postgresql://127.0.0.1:5432/postgres');
  if (!url.username) url.username = process.env.PGUSER ?? userInfo().username;
  return url;
})();
const dbUrl = (name) => Object.assign(new URL(ADMIN.toString()), { pathname: `/${name}` }).toString();
const PG_ENV = { ...process.env, PGHOST: ADMIN.hostname, PGPORT: ADMIN.port || '5432', PGUSER: decodeURIComponent(ADMIN.username), ...(ADMIN.password ? { PGPASSWORD: decodeURIComponent(ADMIN.password) } : {}) };
const SOURCE = `bench_src_s${SCALE}`;
const target = (env, tool) => `bench_${tool}_${env}`;

function run(command, args, options = {}) {
  const result = spawnSync(command, args, { env: PG_ENV, encoding: 'utf8', ...options });
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} failed (${result.status}): ${result.stderr || result.error}`);
  return result.stdout;
}

/** Runs a command asynchronously (so several run in parallel); rejects on a non-zero exit. */
function runAsync(command, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: PG_ENV, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.on('exit', (code) => (code === 0 ? resolve(undefined) : reject(new Error(`${command} ${args.join(' ')}: ${stderr}`))));
  });
}

async function sql(db, text) {
  const client = new Client({ connectionString: dbUrl(db) });
  await client.connect();
  try {
    return (await client.query(text)).rows;
  } finally {
    await client.end();
  }
}

async function recreate(db) {
  await sql('postgres', `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${db}'`);
  await sql('postgres', `DROP DATABASE IF EXISTS ${db}`);
  await sql('postgres', `CREATE DATABASE ${db}`);
}

/** Same schema, stale data: what an environment looks like before its refresh. */
async function staleTarget(db) {
  await recreate(db);
  run('pgbench', ['-i', '-q', '-s', '1', db]);
}

const timed = async (work) => {
  const started = process.hrtime.bigint();
  await work();
  return Number(process.hrtime.bigint() - started) / 1e9;
};

async function checksum(db) {
  const rows = await sql(db, "SELECT md5(string_agg(md5(t::text), '' ORDER BY aid)) AS sum, count(*)::int AS n FROM pgbench_accounts t");
  return rows[0];
}

// ---------------------------------------------------------------- contenders

/** psql: \copy to a file, then three parallel \copy loads, each in a transaction. */
async function psqlPipeline(dir) {
  const file = join(dir, 'accounts.csv');
  const tables = ['pgbench_accounts', 'pgbench_branches', 'pgbench_tellers', 'pgbench_history'];
  let dump = 0;
  const total = await timed(async () => {
    dump = await timed(async () => {
      for (const t of tables) await runAsync('psql', ['-X', '-q', '-d', SOURCE, '-c', `\\copy ${t} to '${join(dir, t)}.csv' csv header`]);
    });
    await Promise.all(
      ENVS.map((env) =>
        runAsync('psql', [
          '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', target(env, 'psql'),
          '-c', 'BEGIN', '-c', `TRUNCATE ${tables.join(', ')}`,
          ...tables.flatMap((t) => ['-c', `\\copy ${t} from '${join(dir, t)}.csv' csv header`]),
          '-c', 'COMMIT',
        ]),
      ),
    );
  });
  rmSync(file, { force: true });
  return { total, dump };
}

/** pgcopydb clone into three fresh databases in parallel (its normal use: it creates the schema). */
async function pgcopydbClone(dir) {
  for (const env of ENVS) await recreate(target(env, 'pgcopydb'));
  const total = await timed(() =>
    Promise.all(
      ENVS.map((env) =>
        runAsync('pgcopydb', ['clone', '--source', dbUrl(SOURCE), '--target', dbUrl(target(env, 'pgcopydb')), '--dir', join(dir, `pgcopydb-${env}`), '--table-jobs', '2', '--index-jobs', '2', '--no-owner', '--no-acl']),
      ),
    ),
  );
  return { total };
}

/** pg_dump -Fc once, then three parallel pg_restore into fresh databases. */
async function pgDumpRestore(dir) {
  for (const env of ENVS) await recreate(target(env, 'pgdump'));
  const file = join(dir, 'source.dump');
  let dump = 0;
  const total = await timed(async () => {
    dump = await timed(() => runAsync('pg_dump', ['-Fc', '-f', file, SOURCE]));
    await Promise.all(ENVS.map((env) => runAsync('pg_restore', ['--no-owner', '-d', target(env, 'pgdump'), file])));
  });
  rmSync(file, { force: true });
  return { total, dump };
}

/** db-fanout: the real apps as processes; trigger to the last snapshot.loaded. */
async function startFanout(dir) {
  const { connect } = await import('@nats-io/transport-node');
  const { jetstreamManager } = await import('@nats-io/jetstream');
  const nc = await connect({ servers: NATS_URL });
  const stream = 'DB_FANOUT_BENCH';
  const prefix = 'bench.';
  await (await jetstreamManager(nc)).streams.delete(stream).catch(() => undefined);
  const events = [];
  const sub = nc.subscribe(`${prefix}snapshot.>`);
  void (async () => {
    for await (const m of sub) events.push({ at: performance.now(), subject: m.subject.slice(prefix.length), data: m.json() });
  })();
  const lines = [];
  const apps = [];
  const start = async (name, app, env) => {
    const port = 3900 + apps.length;
    const child = spawn(process.execPath, [join(ROOT, 'dist', 'apps', app, 'main.js')], {
      env: { ...process.env, NO_COLOR: '1', NATS_URL, NATS_STREAM: stream, NATS_SUBJECT_PREFIX: prefix, HTTP_PORT: String(port), SNAPSHOT_DIR: dir, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let buffer = '';
    child.stdout.on('data', (d) => {
      buffer += d;
      let i;
      while ((i = buffer.indexOf('\n')) >= 0) {
        lines.push({ at: performance.now(), name, line: buffer.slice(0, i) });
        buffer = buffer.slice(i + 1);
      }
    });
    child.stderr.on('data', (d) => process.stderr.write(d));
    apps.push({ name, child });
    for (let i = 0; i < 200; i++) {
      if (await fetch(`http://127.0.0.1:${port}/health`).then((r) => r.ok, () => false)) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`${name} did not start`);
  };
  await start('dumper', 'dumper', { SOURCE_DATABASE_URL: dbUrl(SOURCE) });
  for (const env of ENVS) await start(`loader-${env}`, 'loader', { LOADER_ENV: env, TARGET_DATABASE_URL: dbUrl(target(env, 'fanout')) });

  let round = 0;
  return {
    apps,
    async run() {
      round++;
      const date = `2024-01-${String(round).padStart(2, '0')}`;
      const from = events.length;
      const startedAt = performance.now();
      nc.publish(`${prefix}replication.trigger`, JSON.stringify({ date }));
      for (;;) {
        const mine = events.slice(from);
        const failed = mine.find((e) => e.subject.endsWith('failed'));
        if (failed) throw new Error(`fanout failed: ${JSON.stringify(failed.data)}`);
        if (mine.filter((e) => e.subject === 'snapshot.loaded').length === ENVS.length) break;
        await new Promise((r) => setTimeout(r, 5));
      }
      const mine = events.slice(from);
      const ready = mine.find((e) => e.subject === 'snapshot.ready');
      const loads = mine.filter((e) => e.subject === 'snapshot.loaded');
      const copyStarts = ENVS.map((env) => lines.find((l) => l.at >= ready.at - 50 && l.name === `loader-${env}` && l.line.includes(`copying`) && l.line.includes(ready.data.snapshotId)));
      return {
        total: (Math.max(...loads.map((e) => e.at)) - startedAt) / 1000,
        dump: (ready.at - startedAt) / 1000,
        loads: Object.fromEntries(loads.map((e) => [e.data.environment, e.data.durationMs / 1000])),
        readyToCopyMs: Object.fromEntries(ENVS.map((env, i) => [env, copyStarts[i] ? Math.round(copyStarts[i].at - ready.at) : null])),
        bytes: ready.data.tables.reduce((s, t) => s + t.bytes, 0),
        rows: ready.data.tables.reduce((s, t) => s + t.rows, 0),
      };
    },
    peakRssMb() {
      return Object.fromEntries(
        apps.map(({ name, child }) => {
          const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
          return [name, Math.round(Number(/VmHWM:\s+(\d+)/.exec(status)[1]) / 1024)];
        }),
      );
    },
    async stop() {
      for (const { child } of apps) child.kill('SIGTERM');
      await Promise.all(apps.map(({ child }) => new Promise((r) => (child.exitCode !== null ? r(undefined) : child.on('exit', r)))));
      sub.unsubscribe();
      await (await jetstreamManager(nc)).streams.delete(stream).catch(() => undefined);
      await nc.close();
    },
  };
}

// ---------------------------------------------------------------- main

async function main() {
  const hasPgcopydb = spawnSync('pgcopydb', ['--version'], { encoding: 'utf8' }).status === 0;
  const machine = `${cpus().length} cores (${cpus()[0]?.model.trim()}), ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}, ${(await sql('postgres', 'SELECT version()'))[0].version.split(' on ')[0]}`;
  console.log(`db-fanout bench: pgbench scale ${SCALE}, ${ROUNDS} rounds, three environments\n${machine}\n`);

  console.log(`preparing ${SOURCE} and stale targets...`);
  const exists = (await sql('postgres', `SELECT 1 FROM pg_database WHERE datname = '${SOURCE}'`)).length > 0;
  if (!exists) {
    await recreate(SOURCE);
    run('pgbench', ['-i', '-q', '-s', String(SCALE), SOURCE]);
  }
  await sql(SOURCE, 'VACUUM ANALYZE');
  for (const env of ENVS) for (const tool of ['fanout', 'psql']) await staleTarget(target(env, tool));

  const dir = mkdtempSync(join(tmpdir(), 'db-fanout-bench-'));
  const copyToSeconds = [];
  const results = { fanout: [], psql: [], pgcopydb: [], pgdump: [] };
  const notes = [];
  if (!hasPgcopydb) notes.push('pgcopydb not installed (apt-get install pgcopydb): skipped');
  mkdirSync(join(dir, 'snapshots'), { recursive: true });
  const fanout = ONLY.includes('fanout') ? await startFanout(join(dir, 'snapshots')) : undefined;
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      // The reference for the dump: psql's \copy of the big table alone.
      copyToSeconds.push(await timed(() => runAsync('psql', ['-X', '-q', '-d', SOURCE, '-c', `\\copy pgbench_accounts to '${join(dir, 'ref.csv')}' csv header`])));
      if (fanout) results.fanout.push(await fanout.run());
      if (ONLY.includes('psql')) results.psql.push(await psqlPipeline(dir));
      if (hasPgcopydb && ONLY.includes('pgcopydb')) {
        rmSync(join(dir, 'pgcopydb-dev'), { recursive: true, force: true });
        for (const env of ENVS) rmSync(join(dir, `pgcopydb-${env}`), { recursive: true, force: true });
        results.pgcopydb.push(await pgcopydbClone(dir));
      }
      if (ONLY.includes('pgdump')) results.pgdump.push(await pgDumpRestore(dir));
      const summary = Object.entries(results).filter(([, r]) => r.length === round).map(([name, r]) => `${name} ${r[round - 1].total.toFixed(2)}s`);
      console.log(`round ${round}: ${summary.join(', ')}`);
      // Keep the disk flat across rounds: the loaders are done with this round's snapshot.
      for (const name of readdirSync(join(dir, 'snapshots'))) rmSync(join(dir, 'snapshots', name), { recursive: true, force: true });
    }
    const memory = fanout?.peakRssMb();

    // Every contender must have produced production's content.
    const expected = await checksum(SOURCE);
    for (const tool of Object.keys(results).filter((t) => results[t].length)) {
      for (const env of ENVS) {
        const got = await checksum(target(env, tool));
        if (got.sum !== expected.sum) throw new Error(`${tool} ${env}: content differs from the source (${got.n} rows)`);
      }
    }

    const best = (list) => list.reduce((a, b) => (b.total < a.total ? b : a));
    const bytes = statSync(join(dir, 'ref.csv')).size;
    const rows = SCALE * 100_000;
    const table = [];
    const ours = results.fanout.length ? best(results.fanout) : undefined;
    for (const [tool, list] of Object.entries(results)) {
      if (!list.length) continue;
      const b = best(list);
      table.push({
        contender: { fanout: 'db-fanout', psql: 'psql \\copy pipeline', pgcopydb: 'pgcopydb clone x3', pgdump: 'pg_dump -Fc + pg_restore x3' }[tool],
        seconds: b.total,
        mbPerSecond: (bytes * ENVS.length) / 1e6 / b.total,
        rowsPerSecond: (rows * ENVS.length) / b.total,
        oursVsThis: ours ? ours.total / b.total : null,
      });
    }
    const bestCopyTo = Math.min(...copyToSeconds);
    const bestDump = results.fanout.length ? Math.min(...results.fanout.map((r) => r.dump)) : 0;
    const report = {
      when: new Date().toISOString(),
      machine,
      scale: SCALE,
      rounds: ROUNDS,
      csvBytesOfAccounts: bytes,
      table,
      fanout: ours && {
        best: ours,
        bestDumpSeconds: bestDump,
        dumpVsPsqlCopyTo: bestDump / bestCopyTo,
        psqlCopyToSeconds: bestCopyTo,
        peakRssMb: memory,
        all: results.fanout,
      },
      raw: results,
      notes,
    };

    console.log('');
    const header = ['contender', 'seconds', 'MB/s', 'rows/s', 'db-fanout / this'];
    const lines = table.map((r) => [r.contender, r.seconds.toFixed(2), r.mbPerSecond.toFixed(0), Math.round(r.rowsPerSecond).toLocaleString('en'), r.oursVsThis?.toFixed(2) ?? '-']);
    const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
    const fmt = (cells) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`;
    console.log(fmt(header));
    console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
    for (const line of lines) console.log(fmt(line));
    if (ours) {
      console.log(`\ndb-fanout: best dump ${bestDump.toFixed(2)} s, trigger to snapshot.ready (best psql \\copy to of pgbench_accounts: ${bestCopyTo.toFixed(2)} s, ratio ${(bestDump / bestCopyTo).toFixed(2)})`);
      console.log(`loads in the best round: ${ENVS.map((e) => `${e} ${ours.loads[e].toFixed(2)} s`).join(', ')}`);
      console.log(`snapshot.ready to COPY start: ${ENVS.map((e) => `${e} ${ours.readyToCopyMs[e]} ms`).join(', ')}`);
      console.log(`peak RSS: ${Object.entries(memory).map(([n, mb]) => `${n} ${mb} MB`).join(', ')}`);
    }
    for (const note of notes) console.log(`note: ${note}`);
    mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
    const file = join(ROOT, 'bench', 'results', `scale${SCALE}-${report.when.replace(/[:.]/g, '-')}.json`);
    writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
    console.log(`\nwritten ${file}`);
  } finally {
    await fanout?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((error) => {
  console.error(`bench failed: ${error.message}`);
  process.exit(1);
});
