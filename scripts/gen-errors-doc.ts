/**
 * Writes docs/errors.md from the error catalogue (src/core/errors.ts). `--check` only compares and exits 1
 * when the file is stale (the test suite runs the same comparison).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { renderErrorsDoc } from '../src/core/errors-doc.ts';

const path = new URL('../docs/errors.md', import.meta.url);
const text = renderErrorsDoc();
if (process.argv.includes('--check')) {
  let current = '';
  try {
    current = readFileSync(path, 'utf8');
  } catch {
    // missing counts as stale
  }
  if (current !== text) {
    console.error('docs/errors.md is stale: run npm run docs:errors');
    process.exit(1);
  }
} else {
  writeFileSync(path, text);
  console.log('wrote docs/errors.md');
}
