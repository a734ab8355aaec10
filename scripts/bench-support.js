// @ts-check
/**
 * What the `npm run bench` scripts share: flags, the admin connection (DEMO_PG_URL, as for the demo),
 * SQL and pgbench helpers, medians, free ports, the apps' start commands and markdown tables. One
 * copy, so that every bench connects, recreates and counts the same way (the demo and the soak take
 * free ports and start commands from here too).
 */
const { spawnSync } = require('node:child_process');
const { createServer } = require('node:net');
const { userInfo } = require('node:os');
const { join } = require('node:path');
const { Client } = require('pg');

const ROOT = join(__dirname, '..');
/** `--name value` from the command line, or the fallback. */
const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
};
const NATS_URL = process.env.NATS_URL ?? 'nats://127.0.0.1:4222';
const ADMIN = (() => {
  const url = new URL(process.env.DEMO_PG_URL ?? 'postgresql://127.0.0.1:5432/postgres');
  if (!url.username) url.username = process.env.PGUSER ?? userInfo().username;
  return url;
})();
const dbUrl = (name) => Object.assign(new URL(ADMIN.toString()), { pathname: `/${name}` }).toString();
/** The environment psql, pgbench and pg_dump need to reach the same server as the admin URL. */
const PG_ENV = { ...process.env, PGHOST: ADMIN.hostname, PGPORT: ADMIN.port || '5432', PGUSER: decodeURIComponent(ADMIN.username), ...(ADMIN.password ? { PGPASSWORD: decodeURIComponent(ADMIN.password) } : {}) };

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

function pgbenchInit(db, scale) {
  const result = spawnSync('pgbench', ['-i', '-q', '-s', String(scale), db], { env: PG_ENV, encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`pgbench -i ${db} failed: ${result.stderr}`);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {import('node:net').AddressInfo} */ (server.address());
      server.close(() => resolve(port));
    });
  });
}

/**
 * How `npm run start:<app>` runs an app, as arguments for this node: the benches, the demo and the
 * soak run the apps as they ship, V8 flags included (the image, docker-compose.yml and the
 * Kubernetes manifests run the same command; test/compose.spec.ts and test/kubernetes.spec.ts keep
 * them equal to package.json).
 */
function appArgs(app) {
  const script = require(join(ROOT, 'package.json')).scripts[`start:${app}`];
  const [node, ...args] = String(script).split(/\s+/);
  if (node !== 'node' || !args.length) throw new Error(`package.json start:${app} is not "node [flags] <main.js>": ${script}`);
  return args.map((a, i) => (i === args.length - 1 ? join(ROOT, a) : a));
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};
const range = (values) => [Math.min(...values), Math.max(...values)];

function markdownTable(header, rows) {
  return [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

module.exports = { ROOT, arg, NATS_URL, ADMIN, dbUrl, PG_ENV, sql, recreate, pgbenchInit, freePort, appArgs, median, range, markdownTable };
