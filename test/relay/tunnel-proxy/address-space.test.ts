/**
 * The socket addresses a tunnel-proxy server connection hands its clients: how many exist, that the
 * configured maximum of clients per server matches them, and that the allocator never hands out an
 * address that is unusable or taken, even when every address is taken (it says so instead).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { nextFreeAddress, usableAddress } from '../../../src/relay/tunnel-proxy/server-leg.ts';
import { relayConfigSchema } from '../../../src/relay/config.ts';
import { validateConfig } from '../../../src/core/config/load.ts';

const ALL = Array.from({ length: 0x10000 }, (_, a) => a);
const USABLE = ALL.filter((a) => usableAddress(a));
const maxClients = (n: number) => validateConfig(relayConfigSchema, { tunnelProxy: { limits: { maxClientsPerServer: n } } }).tunnelProxy.limits.maxClientsPerServer;

test('usable addresses: not 0, not 0xFFFF, no byte C0 or DB: 64,514 of them', () => {
  const rule = (a: number) => a !== 0 && a !== 0xffff && ![a >>> 8, a & 0xff].some((b) => b === 0xc0 || b === 0xdb);
  assert.deepEqual(USABLE, ALL.filter(rule));
  assert.equal(USABLE.length, 64514);
});

test('maxClientsPerServer accepts the usable count and refuses one more', () => {
  assert.equal(maxClients(USABLE.length), USABLE.length);
  assert.throws(() => maxClients(USABLE.length + 1), /maxClientsPerServer/);
});

test('every usable address taken: no address (never a taken one); one left free: that one, from any start', () => {
  const taken = new Set(USABLE);
  for (const last of [0, 1, 0xbf, 0xc0, 0xdafe, 0xfffe, 0xffff]) assert.equal(nextFreeAddress(last, (a) => taken.has(a)), undefined);
  for (const free of [1, 0xbf, 0xc1, 0xdadc, 0xfffe]) {
    taken.delete(free);
    for (const last of [0, free - 1, free, free + 1, 0xfffe, 0xffff]) assert.equal(nextFreeAddress(last, (a) => taken.has(a)), free);
    taken.add(free);
  }
});

test('round robin: the first usable, free address after the last one given (wrapping)', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xffff }), fc.uniqueArray(fc.constantFrom(...USABLE), { maxLength: 300 }), (last, takenList) => {
      const taken = new Set(takenList);
      const got = nextFreeAddress(last, (a) => taken.has(a));
      let want: number | undefined;
      for (let i = 1; i <= 0x10000 && want === undefined; i++) {
        const a = (last + i) & 0xffff;
        if (usableAddress(a) && !taken.has(a)) want = a;
      }
      assert.equal(got, want);
    }),
    { numRuns: 200 },
  );
});
