#!/usr/bin/env node
// The `db-fanout` CLI; the code is built with the apps (`npm run build`).
const { existsSync } = require('node:fs');
const { join } = require('node:path');

const main = join(__dirname, '..', 'dist', 'apps', 'cli', 'main.js');
if (!existsSync(main)) {
  process.stderr.write('db-fanout: the CLI is not built yet; run `npm run build` first\n');
  process.exit(1);
}
require(main);
