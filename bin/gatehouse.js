#!/usr/bin/env -S node --max-semi-space-size=2
// The `gatehouse` command: runs the compiled CLI from dist/ when built (always, in an installed package),
// else the TypeScript sources through tsx (a checkout after `npm ci`). With neither, one line says what to do.
// Node flags (the line above; V8 reads them only at start, so they cannot be set later from JavaScript):
// --max-semi-space-size=2 caps V8's young generation at 2 MiB per semi-space instead of 16. The relay's
// data path collects the young generation itself every 2 MiB it relays (src/relay/young-gc.ts), so a larger
// one only held dead objects: with it capped a gateway starts ~5 MB smaller and a 1 GiB TLS/WS/WSS transfer
// peaks 10-14 MB lower at the same throughput (docs/benchmarks.md, "TLS/WS/WSS memory"). bench/relay reads
// the flags from this line, and `serve --workers` passes them on to its workers.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const compiled = new URL('../dist/cli/main.js', import.meta.url);
if (existsSync(fileURLToPath(compiled))) {
  await import(compiled.href);
} else {
  let tsx;
  try {
    tsx = await import('tsx/esm/api');
  } catch (err) {
    if (err?.code !== 'ERR_MODULE_NOT_FOUND') throw err;
    const sources = existsSync(fileURLToPath(new URL('../src/cli/main.ts', import.meta.url)));
    process.stderr.write(
      sources
        ? 'gatehouse: neither the compiled CLI (dist/) nor tsx is here: run `npm ci` (development) or `npm run build`\n'
        : 'gatehouse: this installation has no compiled CLI (dist/ is missing): reinstall the package built by `npm pack`\n',
    );
    process.exit(70);
  }
  tsx.register();
  await import(new URL('../src/cli/main.ts', import.meta.url).href);
}
