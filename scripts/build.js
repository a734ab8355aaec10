#!/usr/bin/env node
// @ts-check
/**
 * `npm run build`: compiles the apps and libs/common with swc (the .swcrc beside package.json), one
 * file at a time, no bundling and no type check (`npm run check` runs tsc).
 *
 *   apps/<app>/src/**  ->  dist/apps/<app>/**         dist/apps/<app>/main.js is what npm start:*,
 *                                                    the Dockerfile, bin/db-fanout.js and the tests run
 *   libs/common/src/** ->  dist/node_modules/@app/common/**
 *
 * The library goes under dist/node_modules so that the compiled apps' `require('@app/common/config')`
 * resolves the way Node resolves any package: no path rewriting, no runtime hook. Files beside the
 * TypeScript that are not TypeScript (the status page's HTML, CSS and browser script) are copied as
 * they are. Spec files are left out.
 */
const { transformFile } = require('@swc/core');
const { copyFileSync, mkdirSync, readdirSync, rmSync, writeFileSync } = require('node:fs');
const { basename, dirname, join, relative } = require('node:path');

const ROOT = join(__dirname, '..');
const DIST = join(ROOT, 'dist');
const APPS = ['scheduler', 'dumper', 'loader', 'cli'];

/** [source directory, output directory] pairs. */
const TREES = [
  ...APPS.map((app) => [join(ROOT, 'apps', app, 'src'), join(DIST, 'apps', app)]),
  [join(ROOT, 'libs', 'common', 'src'), join(DIST, 'node_modules', '@app', 'common')],
];

const isSpec = (file) => /\.(spec|e2e-spec)\.ts$/.test(file);

/** @param {string} source @param {string} output */
async function compile(source, output) {
  const mapFile = `${output}.map`;
  const { code, map } = await transformFile(source, {
    cwd: ROOT,
    swcrc: true,
    sourceFileName: relative(dirname(output), source),
  });
  mkdirSync(dirname(output), { recursive: true });
  writeFileSync(output, map ? `${code}\n//# sourceMappingURL=${basename(mapFile)}\n` : code);
  if (map) writeFileSync(mapFile, map);
}

async function main() {
  const started = Date.now();
  rmSync(DIST, { recursive: true, force: true });
  const work = [];
  let copied = 0;
  for (const [from, to] of TREES) {
    for (const entry of readdirSync(from, { recursive: true, withFileTypes: true })) {
      if (!entry.isFile()) continue;
      const source = join(entry.parentPath, entry.name);
      const target = join(to, relative(from, source));
      if (entry.name.endsWith('.d.ts') || isSpec(entry.name)) continue;
      if (entry.name.endsWith('.ts')) {
        work.push(compile(source, target.replace(/\.ts$/, '.js')));
      } else {
        mkdirSync(dirname(target), { recursive: true });
        copyFileSync(source, target);
        copied++;
      }
    }
  }
  await Promise.all(work);
  process.stdout.write(`build: ${work.length} files compiled with swc, ${copied} copied, into dist/ in ${((Date.now() - started) / 1000).toFixed(1)}s\n`);
}

main().catch((error) => {
  process.stderr.write(`build failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
