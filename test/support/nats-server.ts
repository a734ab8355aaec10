import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect as connectSocket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './apps';

const NATS_SERVER = process.env.TEST_NATS_SERVER ?? '/usr/sbin/nats-server';

/**
 * A NATS server of the test's own (JetStream, its own store directory and port), so a test can
 * restart or stop it without touching the machine's shared server or any other test.
 */
export class OwnNatsServer {
  private child?: ChildProcess;
  private readonly storeDir = mkdtempSync(join(tmpdir(), 'db-fanout-nats-'));

  private constructor(
    readonly port: number,
    private readonly extraArgs: string[],
  ) {}

  static async start(extraArgs: string[] = []): Promise<OwnNatsServer> {
    const server = new OwnNatsServer(await freePort(), extraArgs);
    await server.startProcess();
    return server;
  }

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  private async startProcess(): Promise<void> {
    this.child = spawn(NATS_SERVER, ['-a', '127.0.0.1', '-p', String(this.port), '-js', '-sd', this.storeDir, ...this.extraArgs], {
      stdio: 'ignore',
    });
    const deadline = Date.now() + 10_000;
    while (!(await accepts(this.port))) {
      if (Date.now() > deadline) throw new Error(`nats-server did not start on port ${this.port}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  }

  async restart(downForMs = 0): Promise<void> {
    await this.stop();
    if (downForMs) await new Promise((resolve) => setTimeout(resolve, downForMs));
    await this.startProcess();
  }

  async destroy(): Promise<void> {
    await this.stop();
    rmSync(this.storeDir, { recursive: true, force: true });
  }
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connectSocket(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
