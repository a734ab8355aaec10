import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';

const ROOT = join(__dirname, '..', '..');

export type AppName = 'scheduler' | 'dumper' | 'loader';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/**
 * `npm run start:<app>`'s command from package.json, as node's arguments: the tests run the apps as
 * they ship (the image, compose and Kubernetes run the same command), V8 flags included.
 */
export function startArguments(app: AppName): string[] {
  const scripts = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
  const [node, ...args] = (scripts[`start:${app}`] ?? '').split(/\s+/);
  if (node !== 'node' || !args.length) throw new Error(`package.json start:${app} is not "node [flags] <main.js>"`);
  return args.map((arg, i) => (i === args.length - 1 ? join(ROOT, arg) : arg));
}

/** One of the built apps running as a real process (`npm run build` first; `npm test` does). */
export class RunningApp {
  output = '';
  /** Every complete output line (stdout or stderr), with Date.now() when its end arrived. */
  readonly lines: { at: number; text: string }[] = [];
  // Per stream: the unfinished last line, and a decoder that keeps a UTF-8 character split across chunks whole.
  private readonly partial = { stdout: '', stderr: '' };
  private readonly decoders = { stdout: new StringDecoder('utf8'), stderr: new StringDecoder('utf8') };
  private exited?: Promise<number | null>;
  exitCode: number | null | undefined;

  private constructor(
    readonly name: string,
    readonly port: number,
    private readonly child: ChildProcess,
  ) {
    child.stdout?.on('data', (chunk: Buffer) => this.collect('stdout', chunk));
    child.stderr?.on('data', (chunk: Buffer) => this.collect('stderr', chunk));
    this.exited = new Promise((resolve) =>
      child.on('exit', (code) => {
        this.exitCode = code;
        resolve(code);
      }),
    );
  }

  static async start(app: AppName, env: Record<string, string>, label: string = app): Promise<RunningApp> {
    const args = startArguments(app);
    const main = args[args.length - 1];
    if (!existsSync(main)) throw new Error(`${main} is missing: run npm run build`);
    const port = env.HTTP_PORT ? Number(env.HTTP_PORT) : await freePort();
    const child = spawn(process.execPath, args, {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', NO_COLOR: '1', ...env, HTTP_PORT: String(port) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return new RunningApp(label, port, child);
  }

  private collect(stream: 'stdout' | 'stderr', chunk: Buffer): void {
    this.output += chunk.toString();
    const at = Date.now();
    // Each stream keeps its own unfinished line, so interleaved stdout and stderr never mix inside a line.
    const pieces = (this.partial[stream] + this.decoders[stream].write(chunk)).split('\n');
    this.partial[stream] = pieces.pop()!;
    for (const line of pieces) this.lines.push({ at, text: line.endsWith('\r') ? line.slice(0, -1) : line });
  }

  get pid(): number {
    return this.child.pid!;
  }

  async health(): Promise<number | undefined> {
    try {
      const response = await fetch(`http://127.0.0.1:${this.port}/health`);
      return response.status;
    } catch {
      return undefined;
    }
  }

  async waitHealthy(timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while ((await this.health()) !== 200) {
      if (this.exitCode !== undefined) throw new Error(`${this.name} exited with ${this.exitCode}:\n${this.output}`);
      if (Date.now() > deadline) throw new Error(`${this.name} not healthy after ${timeoutMs}ms:\n${this.output}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** SIGTERM and wait for a clean exit. */
  async stop(timeoutMs = 20_000): Promise<number | null> {
    if (this.exitCode !== undefined) return this.exitCode;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    const code = await this.exited!;
    clearTimeout(timer);
    return code;
  }

  async kill(): Promise<void> {
    if (this.exitCode !== undefined) return;
    this.child.kill('SIGKILL');
    await this.exited;
  }

  async waitExit(): Promise<number | null> {
    return this.exited!;
  }
}

/** Starts apps and stops them all at the end of a test file. */
export class AppFleet {
  private readonly apps: RunningApp[] = [];

  async start(app: AppName, env: Record<string, string>, label?: string): Promise<RunningApp> {
    const running = await RunningApp.start(app, env, label);
    this.apps.push(running);
    await running.waitHealthy();
    return running;
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.apps.map((app) => app.stop()));
  }

  /** The app started under `label`. */
  app(label: string): RunningApp {
    const found = this.apps.find((app) => app.name === label);
    if (!found) throw new Error(`no app named ${label}`);
    return found;
  }

  logs(): string {
    return this.apps.map((app) => `--- ${app.name}\n${app.output}`).join('\n');
  }
}
