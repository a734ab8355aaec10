// @ts-check
/**
 * The processes under test: the soak's own nats-server (own port, own store directory) and the
 * built apps. Each keeps its port across restarts and appends its output to one log file per
 * process; an exit the soak did not cause is recorded (a crash is a violation).
 */
const { spawn } = require('node:child_process');
const { createWriteStream, existsSync } = require('node:fs');
const { connect } = require('node:net');
const { join } = require('node:path');
const { appArgs, freePort: anyFreePort } = require('../bench-support');

const ROOT = join(__dirname, '..', '..');
const NATS_SERVER = process.env.SOAK_NATS_SERVER ?? process.env.TEST_NATS_SERVER ?? '/usr/sbin/nats-server';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const handedOut = new Set();

/** A free loopback port, never one this soak already gave to another process. */
async function freePort() {
  for (;;) {
    const port = await anyFreePort();
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

function accepts(port) {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

class SoakProcess {
  /**
   * @param {string} name
   * @param {number} port
   * @param {() => { command: string, args: string[], env: Record<string, string> }} command
   * @param {string} logFile
   * @param {'http' | 'tcp'} probe /health on the port, or just a TCP accept (nats-server)
   */
  constructor(name, port, command, logFile, probe) {
    this.name = name;
    this.port = port;
    this.command = command;
    this.log = createWriteStream(logFile, { flags: 'a' });
    this.logFile = logFile;
    this.probe = probe;
    this.child = undefined;
    this.exited = Promise.resolve();
    this.incarnation = 0;
    this.closed = false;
    /** Exits the soak did not cause: `${name} exited with ...`. */
    this.crashes = [];
  }

  start() {
    if (this.closed) return; // the soak is cleaning up: nothing comes back
    const { command, args, env } = this.command();
    this.incarnation++;
    this.log.write(`\n=== soak: start #${this.incarnation} of ${this.name} at ${new Date().toISOString()}\n`);
    const child = spawn(command, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.pipe(this.log, { end: false });
    child.stderr.pipe(this.log, { end: false });
    child.expectedExit = false;
    this.exited = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        if (!child.expectedExit) this.crashes.push(`${this.name} (#${this.incarnation}) exited by itself with ${signal ?? `code ${code}`} at ${new Date().toISOString()}`);
        resolve(undefined);
      }),
    );
    this.child = child;
  }

  get running() {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  async healthy() {
    if (!this.running) return false;
    if (this.probe === 'tcp') return accepts(this.port);
    try {
      return (await fetch(`http://127.0.0.1:${this.port}/health`, { signal: AbortSignal.timeout(2_000) })).status === 200;
    } catch {
      return false;
    }
  }

  async waitHealthy(timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    while (!(await this.healthy())) {
      if (!this.running) throw new Error(`${this.name} exited while starting (log: ${this.logFile})`);
      if (Date.now() > deadline) throw new Error(`${this.name} not healthy after ${timeoutMs / 1000} s (log: ${this.logFile})`);
      await sleep(100);
    }
  }

  async kill9() {
    if (!this.running) return;
    this.child.expectedExit = true;
    this.log.write(`\n=== soak: kill -9 of ${this.name} at ${new Date().toISOString()}\n`);
    this.child.kill('SIGKILL');
    await this.exited;
  }

  /** For good (clean-up): SIGTERM, then SIGKILL after `timeoutMs`; start() does nothing afterwards. */
  async stop(timeoutMs = 20_000) {
    this.closed = true;
    if (!this.running) return;
    this.child.expectedExit = true;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child?.kill('SIGKILL'), timeoutMs);
    await this.exited;
    clearTimeout(timer);
  }

  async close() {
    await new Promise((resolve) => this.log.end(resolve));
  }
}

/** Builds the fleet: nats-server first, then scheduler, dumper and one loader per environment. */
async function createFleet({ logDir, storeDir, appEnv, sourceUrl, targets }) {
  // The apps run as `npm run start:<app>` runs them, V8 flags included.
  const main = (app) => appArgs(app).at(-1);
  for (const app of ['scheduler', 'dumper', 'loader']) {
    if (!existsSync(main(app))) throw new Error(`${main(app)} is missing: run npm run build first`);
  }
  const natsPort = await freePort();
  const nats = new SoakProcess(
    'nats-server',
    natsPort,
    () => ({ command: NATS_SERVER, args: ['-a', '127.0.0.1', '-p', String(natsPort), '-js', '-sd', storeDir], env: { PATH: process.env.PATH ?? '' } }),
    join(logDir, 'nats-server.log'),
    'tcp',
  );
  const natsUrl = `nats://127.0.0.1:${natsPort}`;
  const app = async (name, appName, env) => {
    const port = await freePort();
    const fullEnv = { PATH: process.env.PATH ?? '', NO_COLOR: '1', ...appEnv, NATS_URL: natsUrl, HTTP_HOST: '127.0.0.1', HTTP_PORT: String(port), ...env };
    return new SoakProcess(name, port, () => ({ command: process.execPath, args: appArgs(appName), env: fullEnv }), join(logDir, `${name}.log`), 'http');
  };
  const apps = [await app('scheduler', 'scheduler', {}), await app('dumper', 'dumper', { SOURCE_DATABASE_URL: sourceUrl })];
  for (const [environment, url] of Object.entries(targets)) apps.push(await app(`loader-${environment}`, 'loader', { LOADER_ENV: environment, TARGET_DATABASE_URL: url }));
  return { nats, natsUrl, apps, all: [nats, ...apps] };
}

module.exports = { createFleet, sleep, SoakProcess };
