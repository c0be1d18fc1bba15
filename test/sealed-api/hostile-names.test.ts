/**
 * Client-chosen names that collide with Object.prototype (`constructor`, `__proto__`, `toString`, …) in
 * every position a name takes in the sealed API, over real HTTP to a real server: the action, the logical
 * file, format operation paths, section and key names, WireGuard keys, backup ids, the outer `kid`/`skid`,
 * and argument keys. Each request gets a coded answer (never a 500, never an uncaught exception), the
 * server still serves a valid request afterwards, and Object.prototype stays clean.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { ERROR_CATALOGUE } from '../../src/core/errors.ts';
import { SealedCallError } from '../../src/sealed-api/client.ts';
import {
  hostileJsonObject,
  hostileJsonValue,
  hostileName,
  objectWithOwnKeys,
  PROTOTYPE_KEYS,
} from '../helpers/hostile.ts';
import { craft, expect401, startSealed, tempDir, wgKey, write, type StartedSealed, type TestClient } from './helpers.ts';

const RUNS = 25;
const PROTO_NAMES = Object.getOwnPropertyNames(Object.prototype).sort();
const CODES = new Set<string>(Object.keys(ERROR_CATALOGUE));

function assertPrototypeClean(): void {
  assert.deepEqual(Object.getOwnPropertyNames(Object.prototype).sort(), PROTO_NAMES, 'Object.prototype gained a key');
  const probe: Record<string, unknown> = {};
  assert.equal(probe.polluted, undefined);
  assert.equal(Object.getPrototypeOf(probe), Object.prototype);
  assert.equal(typeof probe.toString, 'function');
}

let s: StartedSealed;
let c: TestClient;
after(async () => s.close());

const WG = `[Interface]\nPrivateKey = ${wgKey(1)}\nAddress = 10.0.0.1/24\n\n[Peer]\nPublicKey = ${wgKey(2)}\nAllowedIPs = 10.0.0.2/32\n`;

async function server(): Promise<void> {
  if (s !== undefined) return;
  const dir = tempDir();
  mkdirSync(join(dir, 'etc'));
  write(dir, 'etc/a.json', '{"a":1}\n');
  write(dir, 'etc/a.yaml', 'a: 1\n');
  write(dir, 'etc/a.toml', 'a = 1\n');
  write(dir, 'etc/a.ini', '[a]\nb = 1\n');
  write(dir, 'etc/wg0.conf', WG);
  // Logical names that are prototype keys are legal config names too: they must be plain names.
  s = await startSealed(
    {
      files: {
        json: { path: 'etc/a.json', format: 'json', backup: false },
        yaml: { path: 'etc/a.yaml', format: 'yaml', backup: false },
        toml: { path: 'etc/a.toml', format: 'toml', backup: false },
        ini: { path: 'etc/a.ini', format: 'ini', backup: false },
        wg0: { path: 'etc/wg0.conf', format: 'wireguard', backup: false },
        constructor: { path: 'etc/a.json', format: 'json' },
      },
      modules: { echo: { file: fileURLToPath(new URL('./fixtures/echo-module.ts', import.meta.url)) } },
      // The kid/skid probes are authentication failures by design: no 429 in the middle of them.
      limits: { maxAuthFailuresPerIp: 1000000 },
    },
    { dir },
  );
  c = await s.client('alice');
}

/** A call's outcome: a result or a sealed error whose code is in the catalogue (never a 500). */
async function coded(p: Promise<unknown>, why: string): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    assert.ok(err instanceof SealedCallError, `${why}: ${String(err)}`);
    assert.ok(err.status < 500 || err.status === 503, `${why}: ${err.status} ${err.code} ${err.message}`);
    if (err.sealed) assert.ok(CODES.has(err.code), `${why}: unknown code ${err.code}`);
    return err.code;
  }
}

async function stillServes(): Promise<void> {
  assert.deepEqual(await c.call('ping'), { pong: true });
  assertPrototypeClean();
}

test('every Object.prototype key as the action name: sealed 404, server keeps serving', async () => {
  await server();
  for (const name of PROTOTYPE_KEYS) {
    assert.equal(await coded(c.call(name), name), 'SEALED_UNKNOWN_ACTION', name);
    assert.equal(await coded(c.call(`files.${name}`), name), 'SEALED_UNKNOWN_ACTION', name);
  }
  await fc.assert(
    fc.asyncProperty(hostileName(), async (name) => {
      const code = await coded(c.call(name), name);
      assert.ok(code === 'SEALED_UNKNOWN_ACTION' || code === 'SEALED_FORBIDDEN' || code === 'ok' || code === 'unauthorized', `${name}: ${code}`);
    }),
    { numRuns: RUNS },
  );
  await stillServes();
});

test('every Object.prototype key as the file, backup id, and argument keys: coded answers only', async () => {
  await server();
  for (const name of PROTOTYPE_KEYS) {
    if (name === 'constructor') {
      // A configured file of that name is an ordinary file.
      assert.equal(await coded(c.call('files.read', { file: name }), name), 'ok');
      continue;
    }
    const code = await coded(c.call('files.read', { file: name }), name);
    assert.equal(code, 'SEALED_UNKNOWN_FILE', name);
    assert.equal(await coded(c.call('files.backups', { file: name }), name), 'SEALED_UNKNOWN_FILE');
  }
  const { etag } = await c.call<{ etag: string }>('files.read', { file: 'json' });
  for (const name of PROTOTYPE_KEYS)
    assert.match(await coded(c.call('files.restore', { file: 'json', backup: name, if_match: etag }), name), /SEALED_(UNKNOWN_BACKUP|ETAG_MISMATCH)/);
  await fc.assert(
    fc.asyncProperty(
      hostileName(),
      hostileName(),
      hostileJsonObject(),
      fc.constantFrom('ping', 'time', 'echo', 'files.read', 'files.write', 'files.update', 'files.backups', 'files.restore'),
      async (file, backup, extra, act) => {
        await coded(c.call('files.read', { file }), `file ${file}`);
        await coded(c.call('files.restore', { file: 'json', backup, if_match: '"x"' }), `backup ${backup}`);
        // Argument keys: prototype names as own keys of the args object, beside or instead of real ones.
        await coded(c.call(act, objectWithOwnKeys([...Object.entries(extra), ['file', 'json']])), `${act} args`);
        await coded(c.call(act, extra), `${act} args only hostile`);
        assertPrototypeClean();
      },
    ),
    { numRuns: RUNS },
  );
  for (const name of PROTOTYPE_KEYS)
    await coded(c.call('echo', objectWithOwnKeys([[name, { polluted: true }], ['text', 'x']])), `echo ${name}`);
  await stillServes();
});

/** files.update on `file` with `ops`, from the file's current ETag. */
async function update(file: string, ops: unknown): Promise<string> {
  const { etag } = await c.call<{ etag: string }>('files.read', { file });
  return coded(c.call('files.update', { file, ops, if_match: etag }), `${file} ${JSON.stringify(ops)}`);
}

test('every Object.prototype key in format operation paths, sections, keys and WireGuard keys: data or refused, never pollution', async () => {
  await server();
  for (const name of PROTOTYPE_KEYS) {
    for (const file of ['json', 'yaml', 'toml']) {
      for (const path of [[name], [name, 'polluted'], ['a', name]]) {
        await update(file, [{ op: 'set', path, value: { polluted: true } }]);
        await update(file, [{ op: 'delete', path }]);
      }
      await update(file, [{ op: 'set', path: ['v'], value: objectWithOwnKeys([[name, { polluted: true }]]) }]);
    }
    await update('ini', [{ op: 'set', section: name, key: name, value: 'x' }]);
    await update('ini', [{ op: 'delete', section: name, key: name }]);
    await update('ini', [{ op: 'delete', section: name }]);
    await update('wg0', [{ op: 'interface.set', set: objectWithOwnKeys([[name, 'x']]) }]);
    await update('wg0', [{ op: 'peer.upsert', publicKey: wgKey(3), set: objectWithOwnKeys([[name, '10.0.0.3/32']]) }]);
    await update('wg0', [objectWithOwnKeys([['op', name], ['publicKey', wgKey(3)]])]);
    assertPrototypeClean();
  }
  const seg = fc.oneof(hostileName(), fc.nat(3));
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom('json', 'yaml', 'toml', 'ini', 'wg0'),
      fc.array(seg, { minLength: 1, maxLength: 3 }),
      hostileJsonValue(),
      hostileName(),
      hostileName(),
      async (file, path, value, section, key) => {
        if (file === 'ini') await update(file, [{ op: 'set', section, key, value: 'v' }]);
        else if (file === 'wg0') await update(file, [{ op: 'interface.set', set: objectWithOwnKeys([[key, 'x']]) }]);
        else await update(file, [{ op: 'set', path, value }]);
        assertPrototypeClean();
      },
    ),
    { numRuns: RUNS },
  );
  await stillServes();
});

test('every Object.prototype key as the outer kid or skid: the same 401, server keeps serving', async () => {
  await server();
  for (const name of PROTOTYPE_KEYS) {
    await expect401(s, await craft(s, c, { outer: { kid: name } }), `kid ${name}`);
    await expect401(s, await craft(s, c, { outer: { skid: name } }), `skid ${name}`);
    await expect401(s, await craft(s, c, { inner: { kid: name } }), `inner kid ${name}`);
  }
  await fc.assert(
    fc.asyncProperty(hostileName(), hostileName(), async (kid, skid) => {
      await expect401(s, await craft(s, c, { outer: { kid, skid } }), `kid ${kid} skid ${skid}`);
    }),
    { numRuns: RUNS },
  );
  await stillServes();
});
