#!/usr/bin/env node
// Builds the optional native splice relay (native/) with the node-gyp that ships with npm.
// Never fails the install: without the addon the relay uses its pure-JavaScript data path.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
if (process.platform !== 'linux') {
  console.log('native splice relay: Linux only; using the JavaScript data path');
  process.exit(0);
}
const candidates = [
  process.env.npm_execpath ? join(dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js') : '',
  '/usr/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
  '/usr/local/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
].filter((p) => p !== '' && existsSync(p));
if (candidates.length === 0) {
  console.log('native splice relay: node-gyp not found; using the JavaScript data path');
  process.exit(0);
}
const args = [candidates[0], 'rebuild', '--directory', join(root, 'native')];
const nodedir = process.env.npm_config_nodedir ?? (existsSync('/usr/include/node/node_api.h') ? '/usr' : undefined);
if (nodedir !== undefined) args.push(`--nodedir=${nodedir}`);
const r = spawnSync(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
if (r.status === 0) console.log('native splice relay: built');
else console.log(`native splice relay: build failed; using the JavaScript data path\n${(r.stderr ?? '').split('\n').slice(-6).join('\n')}`);
