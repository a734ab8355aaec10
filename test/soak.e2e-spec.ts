import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from 'pg';
import { ADMIN_URL } from './support/databases';

const ROOT = join(__dirname, '..');

/** Runs `node scripts/soak.js` (what `npm run soak` runs after the build) and collects its output. */
function runSoak(args: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(ROOT, 'scripts', 'soak.js'), ...args], {
      cwd: ROOT,
      env: { ...process.env, SOAK_PG_URL: ADMIN_URL, NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, output }));
  });
}

describe('npm run soak -- --cycles 3', () => {
  // Seed 32 kills the dumper, a loader and nats-server, one per cycle.
  it('kills a process per cycle and ends with every environment equal to the source, nothing lost, doubled or half-loaded', async () => {
    const { code, output } = await runSoak(['--cycles', '3', '--seed', '32', '--rows', '2000', '--cycle-timeout', '120']);
    const failure = `soak output:\n${output}`;

    expect({ code, tail: output.slice(-3000) }).toEqual({ code: 0, tail: expect.stringContaining('PASS') as unknown });
    expect(output.match(/^cycle [1-3]\/3 .* ok$/gm)?.length).toBe(3);
    expect(output).toMatch(/^soak summary: cycles 3, seed 32,/m);
    const kills = /^ {2}kills: (.*)$/m.exec(output)?.[1] ?? failure;
    const killed = Object.fromEntries(kills.split(', ').map((part) => [part.split(' ')[0], Number(part.split(' ')[1])]));
    expect(killed).toEqual({ 'nats-server': 1, scheduler: 0, dumper: 1, 'loader-dev': 0, 'loader-staging': 0, 'loader-qa': 1 });

    // Three cycles plus the final refresh: at least 4 snapshots, each loaded once in each of 3 environments.
    const loads = /^ {2}loads: (\d+) \(dev (\d+), staging (\d+), qa (\d+)\) of (\d+) snapshots/m.exec(output);
    expect(loads).not.toBeNull();
    const [total, dev, staging, qa, snapshots] = loads!.slice(1).map(Number);
    expect(snapshots).toBeGreaterThanOrEqual(4);
    expect({ total, dev, staging, qa }).toEqual({ total: 3 * snapshots, dev: snapshots, staging: snapshots, qa: snapshots });
    expect(output).toContain('lost 0, double 0, half 0, back-in-time 0, content 0, history 0, down 0, timeout 0');

    // Cleaned up: its databases and its run directory are gone.
    const runDir = /logs in (\S+)\/logs$/m.exec(output)?.[1];
    expect(runDir && existsSync(runDir)).toBe(false);
    const runId = /^db-fanout soak: run (\w+),/m.exec(output)?.[1];
    expect(runId).toBeDefined();
    const admin = new Client({ connectionString: ADMIN_URL });
    await admin.connect();
    try {
      const { rows } = await admin.query<{ datname: string }>('SELECT datname FROM pg_database WHERE datname LIKE $1', [`soak_${runId}_%`]);
      expect(rows).toEqual([]);
    } finally {
      await admin.end();
    }
  }, 300_000);

  it('refuses an unknown argument with a line naming it', async () => {
    const { code, output } = await runSoak(['--cycle', '3']);
    expect(code).toBe(1);
    expect(output).toContain('unknown argument "--cycle"');
    expect(output).toContain('usage: npm run soak --');
  });
});
