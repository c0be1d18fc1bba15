/**
 * The node flags the `gatehouse` command starts with: those on the `#!/usr/bin/env -S node …` line of
 * `<repo>/bin/gatehouse.js` (none for a checkout without them). The benchmarks start gateways with them,
 * so a gateway runs as an installed one does.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export function commandNodeFlags(repo: string): string[] {
  let first: string;
  try {
    first = readFileSync(join(repo, 'bin/gatehouse.js'), 'utf8').split('\n', 1)[0] ?? '';
  } catch {
    return [];
  }
  const m = /^#!\S*env(?:\s+-S)?\s+node((?:\s+--\S+)*)\s*$/.exec(first);
  return m?.[1] === undefined ? [] : m[1].split(/\s+/).filter((a) => a !== '');
}
