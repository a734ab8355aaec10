import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

/** Debian's Chromium, which the browser tests drive with playwright-core; CHROMIUM_PATH points elsewhere. */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

const INSTALL = 'apt-get update && apt-get install -y chromium';

function hasAptGet(): boolean {
  return spawnSync('apt-get', ['--version'], { stdio: 'ignore' }).status === 0;
}

function run(command: string, args: string[]): void {
  const result = spawnSync(command, args, { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  if (result.status !== 0) throw new Error(`test set-up: \`${command} ${args.join(' ')}\` failed (exit ${result.status ?? result.signal}); run \`${INSTALL}\` as root, or set CHROMIUM_PATH`);
}

/**
 * Makes sure the browser tests have their Chromium: on a fresh Debian machine where the tests run as
 * root, installs Debian's `chromium` (a minute or two, once); anywhere else it cannot, stops with one
 * line naming the command to run.
 */
export function ensureChromium(log: (line: string) => void = (line) => process.stdout.write(`${line}\n`)): void {
  if (existsSync(CHROMIUM)) return;
  if (process.env.CHROMIUM_PATH) throw new Error(`test set-up: no Chromium at CHROMIUM_PATH=${CHROMIUM}`);
  if (process.getuid?.() !== 0 || !hasAptGet()) {
    throw new Error(`test set-up: the browser tests need Chromium at ${CHROMIUM}; run \`sudo sh -c '${INSTALL}'\` (or set CHROMIUM_PATH)`);
  }
  log(`test set-up: installing Debian's chromium for the browser tests (${INSTALL}), once`);
  run('apt-get', ['update', '-qq']);
  run('apt-get', ['install', '-y', '-qq', 'chromium']);
  if (!existsSync(CHROMIUM)) throw new Error(`test set-up: apt-get installed chromium but ${CHROMIUM} is still missing`);
}
