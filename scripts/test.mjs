#!/usr/bin/env node
// Runs every test file under test/ and src/ with node's own test runner (through tsx).
// Node 20's --test finds no .ts files by itself and would exit 0 having run nothing, so we list them
// here and fail loudly when none are found. Extra argv entries filter files by substring.
// --test-timeout bounds a whole file (each runs in its own process): the pack/install test builds and
// installs the package, over a minute on a loaded 2-core machine; tests set their own tighter deadlines.
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { spawnSync } from 'node:child_process';

const root = new URL('..', import.meta.url).pathname;
const found = [];
function walk(dir) {
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules' || name.startsWith('.')) continue;
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path);
    else if (name.endsWith('.test.ts')) found.push(relative(root, path));
  }
}
walk(join(root, 'test'));
walk(join(root, 'src'));
const filters = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const flags = process.argv.slice(2).filter((a) => a.startsWith('-'));
const files = found.filter((f) => filters.length === 0 || filters.some((p) => f.includes(p))).sort();
if (files.length === 0) {
  console.error(`no test files found (filters: ${filters.join(' ') || 'none'})`);
  process.exit(1);
}
console.log(`running ${files.length} test files`);
const result = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-timeout=180000', '--test-concurrency=2', ...flags, ...files],
  { cwd: root, stdio: 'inherit', env: { ...process.env, GATEHOUSE_TEST: '1' } },
);
process.exit(result.status ?? 1);
