#!/usr/bin/env node
// Builds the optional native splice relay (native/) with the node-gyp that ships with npm, then loads it
// once in a child process to prove it works. It is the package's `install` script: it runs on `npm ci` in a
// checkout and when the packed tarball is installed (`npm install -g ./gatehouse-*.tgz`), in that package.
// Lenient for users: a failure never fails `npm ci` (the relay then uses its pure-JavaScript data path).
// Strict in CI: when CI is set (and not "false"/"0") or GATEHOUSE_REQUIRE_NATIVE=1, any failure (not Linux,
// no node-gyp, no compiler, an addon that does not load) exits 1, so the kernel relay tests cannot be
// skipped silently (test/relay/splice.test.ts fails instead of skipping under GATEHOUSE_REQUIRE_NATIVE=1).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const ci = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false' && process.env.CI !== '0';
const strict = ci || process.env.GATEHOUSE_REQUIRE_NATIVE === '1';
const why = ci ? 'CI is set' : 'GATEHOUSE_REQUIRE_NATIVE=1';

/** Reports a failure: fatal when strict, a note otherwise. */
function fail(message, detail = '') {
  if (strict) {
    console.error(`native splice relay: ${message}; required (${why}), failing${detail === '' ? '' : `\n${detail}`}`);
    process.exit(1);
  }
  console.log(`native splice relay: ${message}; using the JavaScript data path${detail === '' ? '' : `\n${detail}`}`);
  process.exit(0);
}

/** The lines of a build log that say what went wrong (node-gyp's own stack and banner lines dropped). */
const tail = (text) =>
  (text ?? '')
    .split('\n')
    .filter((l) => l.trim() !== '' && !/^gyp (info|ERR! (stack  +at|System|command|cwd|node -v|node-gyp -v|not ok))/.test(l))
    .slice(-8)
    .join('\n');

if (process.platform !== 'linux') fail('Linux only');
const candidates = [
  process.env.npm_execpath ? join(dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js') : '',
  '/usr/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
  '/usr/local/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
].filter((p) => p !== '' && existsSync(p));
if (candidates.length === 0) fail('node-gyp not found');
const args = [candidates[0], 'rebuild', '--directory', join(root, 'native')];
// The headers of the running Node when they are installed beside it (Debian's nodejs: /usr; the official
// tarballs and images: /usr/local), so node-gyp needs no download.
const prefix = join(dirname(process.execPath), '..');
const nodedir =
  process.env.npm_config_nodedir ??
  [prefix, '/usr'].find((dir) => existsSync(join(dir, 'include', 'node', 'node_api.h')));
if (nodedir !== undefined) args.push(`--nodedir=${nodedir}`);
const r = spawnSync(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', timeout: 300_000 });
if (r.status !== 0) fail('build failed', tail(`${r.stdout ?? ''}\n${r.stderr ?? ''}`) || (r.error?.message ?? ''));
const addon = join(root, 'native', 'build', 'Release', 'splice_relay.node');
const load = spawnSync(process.execPath, ['-e', `const a = require(${JSON.stringify(addon)}); if (typeof a.start !== 'function') process.exit(1);`], { encoding: 'utf8', timeout: 30_000 });
if (load.status !== 0) fail('built, but the addon does not load', tail(load.stderr));
console.log('native splice relay: built');
