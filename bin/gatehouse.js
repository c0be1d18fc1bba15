#!/usr/bin/env node
// The `gatehouse` command: runs the compiled CLI from dist/ when built (always, in an installed package),
// else the TypeScript sources through tsx (a checkout after `npm ci`). With neither, one line says what to do.
// Node flags: none, node's defaults. Flags the command needs would go on the line above (`#!/usr/bin/env -S
// node --flag`: V8 reads them only at start); bench/relay reads them from there, and `serve --workers`
// passes the process's own on to its workers. `--max-semi-space-size=2` stood there while TLS and WebSocket
// reads took fresh buffers; since every relay side reads into reused ones, a 1 GiB TLS/WS/WSS transfer
// peaks below 100 MB without it, and it cost the tunnel-proxy mode and TLS CPU (docs/benchmarks.md, "The
// semi-space flag, removed").
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
