#!/usr/bin/env node
// @ts-check
/**
 * `npm run bench`: refresh three environments from a pgbench source, side by side with the tools
 * people use today, on this machine's PostgreSQL and NATS. Prints tables (markdown, ready for the
 * README), writes bench/results/*.json.
 *
 *   --scale N     pgbench scale of the source (default 10: 1M rows, ~96 MB of CSV)
 *   --rounds N    rounds; every contender runs once per round, in an order that rotates from round
 *                 to round; medians and ranges are reported (default 5, at least 3)
 *   --only a,b    contenders to run: fanout, psql, pgcopydb, pgdump (default all)
 *   --label NAME  an experiment: results go to bench/results/scale<N>-NAME-<time>.json and
 *                 latest-scale<N>.json (the README's) is left alone
 *   DEMO_PG_URL / NATS_URL as for the demo.
 *
 * Fairness: a CHECKPOINT before every contender (so nobody pays for the previous one's dirty
 * buffers and WAL), the order rotates, and the ratios compare medians, never the best round.
 */
const { spawn, spawnSync } = require('node:child_process');
const { closeSync, fsyncSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } = require('node:fs');
const { cpus, tmpdir, totalmem, loadavg } = require('node:os');
const { join } = require('node:path');
const { Client } = require('pg');
const { ROOT, arg, NATS_URL, dbUrl, PG_ENV, sql, recreate, freePort, median, range, markdownTable, appArgs } = require('./bench-support');

const SCALE = Number(arg('scale', '10'));
const ROUNDS = Number(arg('rounds', '5'));
const ONLY = arg('only', 'fanout,psql,pgcopydb,pgdump').split(',');
const LABEL = arg('label', '');
const KNOWN = ['fanout', 'psql', 'pgcopydb', 'pgdump'];
const ENVS = ['dev', 'staging', 'qa'];
const TABLES = ['pgbench_accounts', 'pgbench_branches', 'pgbench_tellers', 'pgbench_history'];
const SOURCE = `bench_src_s${SCALE}`;
const target = (env, tool) => `bench_${tool}_${env}`;
const CLK_TCK = 100; // Linux USER_HZ: /proc/<pid>/stat counts CPU time in 1/100 s

if (!Number.isInteger(SCALE) || SCALE < 1) throw new Error(`--scale must be a positive integer, got ${arg('scale')}`);
if (!Number.isInteger(ROUNDS) || ROUNDS < 3) throw new Error(`--rounds must be an integer of at least 3 (a median of fewer rounds says little), got ${arg('rounds')}`);
if (LABEL && !/^[A-Za-z0-9_-]+$/.test(LABEL)) throw new Error(`--label may hold letters, digits, _ and - only, got "${LABEL}"`);
for (const name of ONLY) if (!KNOWN.includes(name)) throw new Error(`--only: unknown contender "${name}" (known: ${KNOWN.join(', ')})`);

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

/** CPU seconds (user + system) a process has used so far, or undefined once it is gone. */
function cpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return undefined;
  }
}

/**
 * What the server was doing while a contender ran: every 100 ms, pg_stat_activity for the
 * contender's databases (wait events of active backends) and the CPU time of those backends,
 * read from /proc (works when PostgreSQL runs on this machine; otherwise CPU is left out).
 */
function serverSampler(databases) {
  const client = new Client({ connectionString: dbUrl('postgres') });
  const waits = new Map();
  // Sessions that existed before the contender started count from their CPU time then; those it
  // opens count from zero.
  const cpuBefore = new Map();
  const cpuLastSeen = new Map();
  let samples = 0;
  let timer;
  let busy = false;
  const sample = async (baseline = false) => {
    if (busy) return;
    busy = true;
    try {
      const { rows } = await client.query(
        `SELECT pid, state, coalesce(wait_event_type || ':' || wait_event, 'CPU') AS wait
           FROM pg_stat_activity WHERE datname = ANY($1) AND pid <> pg_backend_pid()`,
        [databases],
      );
      if (!baseline) samples++;
      for (const row of rows) {
        const cpu = cpuSeconds(row.pid);
        if (baseline) {
          if (cpu !== undefined) cpuBefore.set(row.pid, cpu);
          continue;
        }
        if (row.state === 'active') waits.set(row.wait, (waits.get(row.wait) ?? 0) + 1);
        if (cpu !== undefined) cpuLastSeen.set(row.pid, cpu);
      }
    } catch {
      // a sample lost to a busy server is only a sample
    } finally {
      busy = false;
    }
  };
  return {
    async start() {
      await client.connect();
      await sample(true);
      timer = setInterval(() => void sample(), 100);
    },
    async stop() {
      clearInterval(timer);
      while (busy) await new Promise((r) => setTimeout(r, 5));
      await client.end();
      let cpu = 0;
      for (const [pid, last] of cpuLastSeen) cpu += last - (cpuBefore.get(pid) ?? 0);
      const active = [...waits.values()].reduce((a, b) => a + b, 0);
      return {
        backendCpuSeconds: cpu,
        backends: cpuLastSeen.size,
        samples,
        // share of active-backend samples per wait event ("CPU": active, not waiting)
        waits: Object.fromEntries([...waits.entries()].sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, Number((v / Math.max(1, active)).toFixed(3))])),
      };
    },
  };
}

/** Runs one contender fairly: CHECKPOINT first, then times it and records WAL, checkpoints and server activity. */
async function measured(databases, work) {
  await sql('postgres', 'CHECKPOINT');
  const [before] = await sql('postgres', 'SELECT pg_current_wal_lsn() AS lsn, (SELECT checkpoints_req + checkpoints_timed FROM pg_stat_bgwriter) AS checkpoints');
  const sampler = serverSampler(databases);
  await sampler.start();
  let result;
  const seconds = await timed(async () => (result = await work()));
  const server = await sampler.stop();
  const [after] = await sql(
    'postgres',
    `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '${before.lsn}')::bigint AS wal, (SELECT checkpoints_req + checkpoints_timed FROM pg_stat_bgwriter) AS checkpoints`,
  );
  return { total: seconds, ...result, walBytes: Number(after.wal), checkpointsDuring: Number(after.checkpoints) - Number(before.checkpoints), server };
}

// ---------------------------------------------------------------- contenders

/** The dump's reference: psql's \copy of the same tables to files, one connection, one after another. */
async function psqlCopyTo(dir) {
  await runAsync('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', SOURCE, ...TABLES.flatMap((t) => ['-c', `\\copy ${t} to '${join(dir, t)}.csv' csv header`])]);
  return { bytes: TABLES.reduce((sum, t) => sum + statSync(join(dir, `${t}.csv`)).size, 0) };
}

/** psql: \copy to files, then three parallel \copy loads, each in a transaction. */
async function psqlPipeline(dir) {
  let dump = 0;
  dump = await timed(() => psqlCopyTo(dir));
  await Promise.all(
    ENVS.map((env) =>
      runAsync('psql', [
        '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', target(env, 'psql'),
        '-c', 'BEGIN', '-c', `TRUNCATE ${TABLES.join(', ')}`,
        ...TABLES.flatMap((t) => ['-c', `\\copy ${t} from '${join(dir, t)}.csv' csv header`]),
        '-c', 'COMMIT',
      ]),
    ),
  );
  for (const t of TABLES) rmSync(join(dir, `${t}.csv`), { force: true });
  return { dump };
}

/** pgcopydb clone into three fresh databases in parallel (its normal use: it creates the schema). */
async function pgcopydbClone(dir) {
  await Promise.all(
    ENVS.map((env) =>
      runAsync('pgcopydb', ['clone', '--source', dbUrl(SOURCE), '--target', dbUrl(target(env, 'pgcopydb')), '--dir', join(dir, `pgcopydb-${env}`), '--table-jobs', '2', '--index-jobs', '2', '--no-owner', '--no-acl']),
    ),
  );
  return {};
}

/** pg_dump -Fc once, then three parallel pg_restore into fresh databases. */
async function pgDumpRestore(dir) {
  const file = join(dir, 'source.dump');
  const dump = await timed(() => runAsync('pg_dump', ['-Fc', '-f', file, SOURCE]));
  await Promise.all(ENVS.map((env) => runAsync('pg_restore', ['--no-owner', '-d', target(env, 'pgdump'), file])));
  rmSync(file, { force: true });
  return { dump };
}

/** `<snapshotId> phases: files 3ms, prepare 40ms, copy 1800ms, ...` from the loaders' and the dumper's logs. */
function parsePhases(line, snapshotId) {
  const at = line.indexOf(`${snapshotId} phases: `);
  if (at < 0) return undefined;
  const text = line.slice(at + snapshotId.length + ' phases: '.length);
  const phases = {};
  for (const m of text.matchAll(/([a-z]+) (\d+)ms/g)) phases[m[1]] = Number(m[2]) / 1000;
  return phases;
}

/** db-fanout: the real apps as processes; trigger to the last snapshot.loaded. */
async function startFanout(dir) {
  const { connect } = await import('@nats-io/transport-node');
  const { jetstreamManager } = await import('@nats-io/jetstream');
  const nc = await connect({ servers: NATS_URL });
  // Unique per run: another bench or test on the same NATS must not see these messages.
  const stream = `DB_FANOUT_BENCH_${process.pid}`;
  const prefix = `bench${process.pid}.`;
  await (await jetstreamManager(nc)).streams.delete(stream).catch(() => undefined);
  const events = [];
  const sub = nc.subscribe(`${prefix}snapshot.>`);
  void (async () => {
    for await (const m of sub) events.push({ at: performance.now(), subject: m.subject.slice(prefix.length), data: m.json() });
  })();
  const lines = [];
  const apps = [];
  const start = async (name, app, env) => {
    const port = await freePort();
    const child = spawn(process.execPath, appArgs(app), {
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
    for (let i = 0; i < 300; i++) {
      if (await fetch(`http://127.0.0.1:${port}/health`).then((r) => r.ok, () => false)) return;
      if (child.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`${name} did not start`);
  };
  await start('dumper', 'dumper', { SOURCE_DATABASE_URL: dbUrl(SOURCE) });
  for (const env of ENVS) await start(`loader-${env}`, 'loader', { LOADER_ENV: env, TARGET_DATABASE_URL: dbUrl(target(env, 'fanout')) });
  const loaders = apps.filter((a) => a.name.startsWith('loader-'));

  let round = 0;
  return {
    apps,
    async run() {
      round++;
      const date = `2024-01-${String(round).padStart(2, '0')}`;
      const from = events.length;
      const fromLine = lines.length;
      const cpuBefore = loaders.map(({ child }) => cpuSeconds(child.pid) ?? 0);
      const dumperCpuBefore = cpuSeconds(apps[0].child.pid) ?? 0;
      const startedAt = performance.now();
      nc.publish(`${prefix}replication.trigger`, JSON.stringify({ date }));
      for (;;) {
        const mine = events.slice(from);
        const failed = mine.find((e) => e.subject.endsWith('failed'));
        if (failed) throw new Error(`fanout failed: ${JSON.stringify(failed.data)}`);
        if (mine.filter((e) => e.subject === 'snapshot.loaded').length === ENVS.length) break;
        await new Promise((r) => setTimeout(r, 5));
      }
      const finishedAt = performance.now();
      const loaderCpu = loaders.reduce((sum, { child }, i) => sum + ((cpuSeconds(child.pid) ?? 0) - cpuBefore[i]), 0);
      const mine = events.slice(from);
      const ready = mine.find((e) => e.subject === 'snapshot.ready');
      const snapshotId = ready.data.snapshotId;
      const loads = mine.filter((e) => e.subject === 'snapshot.loaded');
      // The phases line is logged just before snapshot.loaded is published; give stdout a moment.
      await new Promise((r) => setTimeout(r, 50));
      const mineLines = lines.slice(fromLine);
      const phaseOf = (name) => mineLines.map((l) => (l.name === name ? parsePhases(l.line, snapshotId) : undefined)).find(Boolean);
      const copyStarts = ENVS.map((env) => mineLines.find((l) => l.name === `loader-${env}` && l.line.includes('copying') && l.line.includes(snapshotId)));
      return {
        total: (finishedAt - startedAt) / 1000,
        dump: (ready.at - startedAt) / 1000,
        dumpPhases: phaseOf('dumper'),
        dumperCpuSeconds: (cpuSeconds(apps[0].child.pid) ?? 0) - dumperCpuBefore,
        loaderCpuSeconds: loaderCpu,
        loads: Object.fromEntries(loads.map((e) => [e.data.environment, e.data.durationMs / 1000])),
        phases: Object.fromEntries(ENVS.map((env) => [env, phaseOf(`loader-${env}`)])),
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

/** Waits until no session of the loaders is left (their ANALYZE after the load), so it does not overlap the next contender. */
async function loadersIdle() {
  for (let i = 0; i < 600; i++) {
    const [row] = await sql('postgres', "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'db-fanout-loader'");
    if (row.n === 0) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}

// ---------------------------------------------------------------- report

const NAMES = {
  fanout: 'db-fanout',
  psql: 'psql `\\copy` pipeline (dump once, three loads in parallel, each in a transaction)',
  pgcopydb: 'pgcopydb `clone` into three fresh databases in parallel',
  pgdump: '`pg_dump -Fc` once + three parallel `pg_restore` into fresh databases (reference: no atomic refresh, no checksums, no fan-out)',
};

const s = (x) => x.toFixed(2);
const mb = (bytes) => (bytes / 1e6).toFixed(0);

function report(results, copyTo, csvBytes, context) {
  const out = [];
  const rows = SCALE * 100_000;
  const med = Object.fromEntries(Object.entries(results).filter(([, l]) => l.length).map(([tool, l]) => [tool, median(l.map((r) => r.total))]));
  const table = [];
  for (const [tool, list] of Object.entries(results)) {
    if (!list.length) continue;
    const totals = list.map((r) => r.total);
    const [lo, hi] = range(totals);
    table.push({
      tool,
      contender: NAMES[tool],
      medianSeconds: med[tool],
      minSeconds: lo,
      maxSeconds: hi,
      mbPerSecond: (csvBytes * ENVS.length) / 1e6 / med[tool],
      rowsPerSecond: (rows * ENVS.length) / med[tool],
      walBytesMedian: median(list.map((r) => r.walBytes)),
      checkpointsDuring: list.reduce((a, r) => a + r.checkpointsDuring, 0),
      oursVsThis: med.fanout ? med.fanout / med[tool] : null,
    });
  }
  out.push(
    markdownTable(
      ['contender', 'median s', 'range s', 'MB/s', 'rows/s', 'WAL MB', 'db-fanout / this'],
      table.map((r) => [r.contender, s(r.medianSeconds), `${s(r.minSeconds)}-${s(r.maxSeconds)}`, r.mbPerSecond.toFixed(0), Math.round(r.rowsPerSecond).toLocaleString('en'), mb(r.walBytesMedian), r.oursVsThis?.toFixed(2) ?? '-']),
    ),
  );
  const extra = {};
  const fan = results.fanout;
  if (fan.length) {
    const dumps = fan.map((r) => r.dump);
    const copyToSeconds = copyTo.map((r) => r.total);
    const fsyncs = copyTo.map((r) => r.fsyncSeconds);
    extra.dump = { medianSeconds: median(dumps), range: range(dumps), psqlCopyToMedianSeconds: median(copyToSeconds), psqlCopyToRange: range(copyToSeconds), ratio: median(dumps) / median(copyToSeconds), fsyncOfPsqlFilesMedianSeconds: median(fsyncs) };
    out.push('');
    out.push(
      `Dump (trigger to \`snapshot.ready\`, files fsynced): median ${s(extra.dump.medianSeconds)} s (${s(extra.dump.range[0])}-${s(extra.dump.range[1])}); ` +
        `\`psql \\copy ... to\` of the same ${TABLES.length} tables: median ${s(extra.dump.psqlCopyToMedianSeconds)} s (${s(extra.dump.psqlCopyToRange[0])}-${s(extra.dump.psqlCopyToRange[1])}); ratio ${extra.dump.ratio.toFixed(2)}. ` +
        `fsync of psql's files afterwards (the dumper fsyncs, psql does not): median ${s(extra.dump.fsyncOfPsqlFilesMedianSeconds)} s`,
    );
    const dumpPhases = fan.map((r) => r.dumpPhases).filter(Boolean);
    if (dumpPhases.length) out.push(`Dumper phases (median s): ${Object.keys(dumpPhases[0]).map((p) => `${p} ${s(median(dumpPhases.map((d) => d[p] ?? 0)))}`).join(', ')}`);
    out.push('');
    out.push('Load phases per environment, median seconds over the rounds (from each loader\'s `phases:` log line):');
    out.push('');
    const phaseNames = ['files', 'prepare', 'copy', 'indexes', 'constraints', 'commit'];
    extra.phases = {};
    const phaseRows = ENVS.map((env) => {
      const per = fan.map((r) => r.phases[env]).filter(Boolean);
      const medians = Object.fromEntries(phaseNames.map((p) => [p, median(per.map((x) => x[p] ?? 0))]));
      const load = median(fan.map((r) => r.loads[env]));
      extra.phases[env] = { ...medians, load };
      return [env, ...phaseNames.map((p) => s(medians[p])), s(load)];
    });
    out.push(markdownTable(['environment', ...phaseNames, 'load (snapshot.loaded)'], phaseRows));
    const walPerLoad = median(fan.map((r) => r.walBytes)) / ENVS.length;
    const loaderCpu = median(fan.map((r) => r.loaderCpuSeconds));
    const backendCpu = median(fan.map((r) => r.server.backendCpuSeconds));
    extra.resources = { walBytesPerLoad: walPerLoad, loaderCpuSeconds: loaderCpu, backendCpuSeconds: backendCpu, dumperCpuSeconds: median(fan.map((r) => r.dumperCpuSeconds)) };
    out.push('');
    out.push(
      `WAL per load: ${mb(walPerLoad)} MB (median of the run's WAL / ${ENVS.length}; pg_current_wal_lsn() before and after, so other sessions' WAL on a shared server is included). ` +
        `CPU per round (median): loaders ${s(loaderCpu)} s together, their PostgreSQL backends and the dumper's ${s(backendCpu)} s, the dumper ${s(extra.resources.dumperCpuSeconds)} s.`,
    );
    const waitTotals = {};
    for (const r of fan) for (const [k, v] of Object.entries(r.server.waits)) waitTotals[k] = (waitTotals[k] ?? 0) + v / fan.length;
    extra.waits = waitTotals;
    out.push(`Active backends' wait events (share of 100 ms samples, all rounds): ${Object.entries(waitTotals).sort((a, b) => b[1] - a[1]).slice(0, 8).map(([k, v]) => `${k} ${(v * 100).toFixed(0)}%`).join(', ')}`);
    out.push(`snapshot.ready to each loader's COPY (median ms): ${ENVS.map((e) => `${e} ${median(fan.map((r) => r.readyToCopyMs[e] ?? 0)).toFixed(0)}`).join(', ')}`);
    out.push(`Peak RSS: ${Object.entries(context.memory).map(([n, v]) => `${n} ${v} MB`).join(', ')}`);
  }
  return { text: out.join('\n'), table, extra };
}

// ---------------------------------------------------------------- main

async function main() {
  const pgcopydbVersion = spawnSync('pgcopydb', ['--version'], { encoding: 'utf8' });
  const hasPgcopydb = pgcopydbVersion.status === 0;
  const pgVersion = (await sql('postgres', 'SELECT version()'))[0].version.split(' on ')[0];
  const machine = `${cpus().length} cores (${cpus()[0]?.model.trim()}), ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}, ${pgVersion}`;
  console.log(`db-fanout bench: pgbench scale ${SCALE}, ${ROUNDS} rounds, three environments\n${machine}\nload average at start: ${loadavg().map((l) => l.toFixed(2)).join(' ')}\n`);

  const notes = [];
  const contenders = ONLY.filter((c) => c !== 'pgcopydb' || hasPgcopydb);
  if (ONLY.includes('pgcopydb') && !hasPgcopydb) {
    notes.push('pgcopydb is not installed (Debian/Ubuntu: apt-get install pgcopydb): its row is left out');
    console.log(`note: ${notes[0]}\n`);
  }

  console.log(`preparing ${SOURCE} and stale targets...`);
  const exists = (await sql('postgres', `SELECT 1 FROM pg_database WHERE datname = '${SOURCE}'`)).length > 0;
  if (!exists) {
    await recreate(SOURCE);
    run('pgbench', ['-i', '-q', '-s', String(SCALE), SOURCE]);
  }
  await sql(SOURCE, 'VACUUM ANALYZE');
  for (const env of ENVS) for (const tool of ['fanout', 'psql'].filter((t) => contenders.includes(t))) await staleTarget(target(env, tool));

  const dir = mkdtempSync(join(tmpdir(), 'db-fanout-bench-'));
  const results = { fanout: [], psql: [], pgcopydb: [], pgdump: [] };
  const copyTo = [];
  let csvBytes = 0;
  mkdirSync(join(dir, 'snapshots'), { recursive: true });
  const fanout = contenders.includes('fanout') ? await startFanout(join(dir, 'snapshots')) : undefined;
  const dbs = (tool) => [SOURCE, ...ENVS.map((env) => target(env, tool))];
  const steps = {
    copyto: async () => {
      const r = await measured([SOURCE], () => psqlCopyTo(dir));
      // psql leaves its files in the page cache; the dumper fsyncs every file before it announces
      // the snapshot. What that costs here, outside psql's time:
      r.fsyncSeconds = await timed(async () => {
        for (const t of TABLES) {
          const fd = openSync(join(dir, `${t}.csv`), 'r');
          fsyncSync(fd);
          closeSync(fd);
        }
      });
      for (const t of TABLES) rmSync(join(dir, `${t}.csv`), { force: true });
      csvBytes = r.bytes;
      copyTo.push(r);
      return r;
    },
    fanout: async () => {
      const r = await measured(dbs('fanout'), () => fanout.run());
      await loadersIdle();
      // Keep the disk flat across rounds: the loaders are done with this round's snapshot.
      for (const name of readdirSync(join(dir, 'snapshots'))) rmSync(join(dir, 'snapshots', name), { recursive: true, force: true });
      results.fanout.push(r);
      return r;
    },
    psql: async () => {
      const r = await measured(dbs('psql'), () => psqlPipeline(dir));
      results.psql.push(r);
      return r;
    },
    pgcopydb: async () => {
      for (const env of ENVS) {
        await recreate(target(env, 'pgcopydb'));
        rmSync(join(dir, `pgcopydb-${env}`), { recursive: true, force: true });
      }
      const r = await measured(dbs('pgcopydb'), () => pgcopydbClone(dir));
      results.pgcopydb.push(r);
      return r;
    },
    pgdump: async () => {
      for (const env of ENVS) await recreate(target(env, 'pgdump'));
      const r = await measured(dbs('pgdump'), () => pgDumpRestore(dir));
      results.pgdump.push(r);
      return r;
    },
  };
  const order = ['copyto', ...contenders];
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      // Rotate the order: every contender runs first, second, ... in turn over the rounds.
      const shift = (round - 1) % order.length;
      const thisRound = [...order.slice(shift), ...order.slice(0, shift)];
      const summary = [];
      for (const step of thisRound) {
        const r = await steps[step]();
        summary.push(`${step} ${r.total.toFixed(2)}s${r.checkpointsDuring ? ` (${r.checkpointsDuring} checkpoint)` : ''}`);
      }
      console.log(`round ${round}: ${summary.join(', ')}`);
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
    if (results.pgcopydb.length) notes.push(`pgcopydb: ${pgcopydbVersion.stdout.trim().split('\n')[0]}`);

    const when = new Date().toISOString();
    const { text, table, extra } = report(results, copyTo, csvBytes, { memory });
    console.log('');
    console.log(`Measured ${when.slice(0, 16).replace('T', ' ')} UTC, pgbench scale ${SCALE} (${(csvBytes / 1e6).toFixed(0)} MB of CSV), ${ROUNDS} rounds, median (range); ${machine}; load average at the end ${loadavg().map((l) => l.toFixed(2)).join(' ')}.`);
    console.log('');
    console.log(text);
    for (const note of notes) console.log(`note: ${note}`);
    const result = { when, label: LABEL || undefined, server: (await sql('postgres', "SELECT string_agg(name || '=' || setting, ', ' ORDER BY name) AS s FROM pg_settings WHERE name IN ('wal_level', 'shared_buffers', 'max_wal_size', 'max_parallel_maintenance_workers', 'synchronous_commit')"))[0].s, machine, loadAverageAtEnd: loadavg(), scale: SCALE, rounds: ROUNDS, csvBytes, table, ...extra, peakRssMb: memory, psqlCopyTo: copyTo, raw: results, notes };
    mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
    const file = join(ROOT, 'bench', 'results', `scale${SCALE}-${LABEL ? `${LABEL}-` : ''}${when.replace(/[:.]/g, '-')}.json`);
    writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
    // The README's table comes from latest-scale<N>.json (tracked); the dated file keeps the history.
    if (!LABEL) writeFileSync(join(ROOT, 'bench', 'results', `latest-scale${SCALE}.json`), `${JSON.stringify(result, null, 2)}\n`);
    console.log(`\nwritten ${file}${LABEL ? '' : ` and latest-scale${SCALE}.json`}`);
  } finally {
    await fanout?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((error) => {
  console.error(`bench failed: ${error.message}`);
  process.exit(1);
});
