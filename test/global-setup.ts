import { ensureChromium } from './support/chromium';

/**
 * Jest globalSetup of the end-to-end tests: what they need that `npm ci` cannot install. When it
 * cannot be set up, the run stops here with one line saying what to do, not with a failure per test.
 */
export default function globalSetup(): void {
  try {
    ensureChromium();
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n`);
    process.exit(1);
  }
}
