/**
 * No client-chosen string is looked up on an object with a prototype anywhere in the card bridge: every
 * `Object.prototype` key (and the hostile names of test/helpers/hostile.ts) in every position a name can
 * take, over real sockets: reader names, command names, ids, APDU data, PINs, ENUM filters and CHAIN
 * aliases on the line protocol; path segments, query names and values on the CloudFoxy REST API; path
 * segments, JSON keys and values on the foxyproxy API. Each gets its coded answer, nothing is logged as an
 * internal error, and the bridge still serves afterwards.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { captureLog } from '../helpers/relay.ts';
import { PROTOTYPE_KEYS, hostileName, hostileJsonValue, objectWithOwnKeys } from '../helpers/hostile.ts';
import { startBridge, LineClient, type StartedBridge } from './helpers.ts';

const CF = 'cf-hostile-token';
const FP = 'fp-hostile-token';
const H32 = 'AB'.repeat(32);

let b: StartedBridge;
let cfBase = '';
let fpBase = '';
const logged = captureLog('trace');
before(async () => {
  b = await startBridge({
    cards: [{ name: 'Hostile A' }, { name: 'Hostile Signer', signing: { commonName: 'Eva Hostile', pin: '4711', pinTries: 15 } }],
    config: {
      cloudfoxyApi: { enabled: true, host: '127.0.0.1', port: 0, token: CF },
      foxyproxyApi: { enabled: true, host: '127.0.0.1', port: 0, token: FP },
      limits: { maxConnectionsPerIp: 1000 },
    },
    log: logged.log,
  });
  cfBase = b.url('cloudfoxy-api').replace(/\/$/, '');
  fpBase = b.url('foxyproxy-api').replace(/\/$/, '');
});
after(() => b.close());

/** Line-safe form of a name (a line end or separator would change the grammar, not the lookup). */
const lineSafe = (s: string): string => s.replace(/[\r\n:|]/g, '_');

/** Sends one request on a fresh connection; returns the answer lines (without `@@`). */
async function ask(text: string): Promise<string[]> {
  const c = await LineClient.connect(b.port);
  try {
    const ans = await c.request(text, 10000);
    assert.match(ans, /@@\n$/);
    return ans.split('\n').slice(0, -2);
  } finally {
    c.destroy();
  }
}

/** The line-protocol cases for one name: the request and the answer lines it must get. */
function lineCases(rawName: string): { request: string; want: (RegExp | string)[] }[] {
  const n = lineSafe(rawName);
  const t = n.trim();
  // exact results for prototype keys; for arbitrary names (which may match a reader as a substring) any coded one
  const isKey = (PROTOTYPE_KEYS as readonly string[]).includes(t);
  return [
    { request: `>${n}|\n>1:RESET|\n\n`, want: [isKey ? '>1:C083' : /^>1:(3B[0-9A-F]+|C08[0-3])$/] },
    { request: `>Hostile A|\n>2:${n}:00|\n\n`, want: [isKey ? '>2:C081' : t === 'EMPTYLINE' ? '' : /^>2:/] },
    // the id is echoed as sent, less the whitespace right after `>` (foxyproxy strips that too)
    { request: `>Hostile A|\n>${n}:RESET|\n\n`, want: [`>${n.replace(/^[ \t\v\f]+/, '')}:3B021450`] },
    { request: `>Hostile A|\n>3:APDU:${n}|\n\n`, want: [/^>3:(C087|[0-9A-F]{4,})$/] },
    { request: `>Eva Hostile:${n}|\n>4:SIGN:${H32}|\n\n`, want: [/^>4:(C084|C085|6983|6982|[0-9A-F]{512})$/] },
    { request: `>${n}|\n>5:ENUM:${n}|\n>6:CHAIN|\n>7:ALIASES|\n>8:READERS:${n}:${n}|\n\n`, want: [/^>5:/, /^>6:/, /^>7:/, /^>8:/] },
  ].map((c) => ({ ...c, want: c.want.filter((w) => w !== '') }));
}

async function checkLine(name: string): Promise<void> {
  for (const { request, want } of lineCases(name)) {
    const lines = await ask(request);
    assert.equal(lines.length, want.length, `${JSON.stringify(request)} → ${JSON.stringify(lines)}`);
    lines.forEach((l, i) => {
      const w = want[i]!;
      if (typeof w === 'string') assert.equal(l, w, JSON.stringify(request));
      else assert.match(l, w, JSON.stringify(request));
      assert.doesNotMatch(l, /:C090$/, `internal error for ${JSON.stringify(request)}`);
    });
  }
}

async function checkCloudFoxy(name: string): Promise<void> {
  const e = encodeURIComponent(name);
  const h = { 'X-Auth-Token': CF };
  const cases: [string, number[]][] = [
    [`/${e}`, [404]],
    [`/${e}/${e}`, [404]],
    [`/basic?reset=1&terminal=${e}`, [404, 409]],
    [`/basic?reset=0&terminal=Hostile%20A&apdu=${e}`, [400, 200]],
    [`/basic?${e}=${e}&reset=${e}&terminal=Hostile%20A`, [200]],
    [`/hello?${e}=1`, [200]],
  ];
  for (const [path, statuses] of cases) {
    const r = await fetch(`${cfBase}${path}`, { headers: h });
    const body = await r.text();
    assert.ok(statuses.includes(r.status), `${path}: ${r.status} ${body}`);
  }
  // the name as the token (when a header can carry it)
  if (/^[\x21-\x7e]+$/.test(name)) {
    const r = await fetch(`${cfBase}/hello`, { headers: { 'X-Auth-Token': name } });
    await r.text();
    assert.equal(r.status, 401);
  }
}

async function checkFoxyproxy(name: string): Promise<void> {
  const e = encodeURIComponent(name);
  const h = { Authorization: `Bearer ${FP}` };
  for (const [path, statuses] of [
    [`/${e}`, [404]],
    [`/select/${e}`, [200]],
    [`/select/${e}/${e}`, [200]],
    [`/select/Hostile/${e}`, [200]],
  ] as [string, number[]][]) {
    const r = await fetch(`${fpBase}${path}`, { headers: h });
    const body = await r.text();
    assert.ok(statuses.includes(r.status), `${path}: ${r.status} ${body}`);
  }
  const post = async (body: string): Promise<{ status: number; json: unknown }> => {
    const r = await fetch(`${fpBase}/command`, { method: 'POST', headers: h, body });
    const text = await r.text();
    return { status: r.status, json: JSON.parse(text) as unknown };
  };
  // names as the reader, the id, the command and its data; ids come back exactly as given
  const good = await post(JSON.stringify({ data: { reader: name, commands: [{ id: name, line: `${name}:${name}` }, { id: '2', line: `RESET:${name}` }] } }));
  assert.equal(good.status, 200, JSON.stringify(good.json));
  const resp = (good.json as { response: { id: string; line: string }[] }).response;
  assert.equal(resp[0]?.id, name);
  assert.match(resp[0].line, /^(C08[0-9]|OK|[0-9A-F]{4,}|[A-Za-z0-9+/=|:]*)$/);
  assert.notEqual(resp[0].line, 'C090');
  // names as JSON keys at every level (own properties, as JSON.parse makes them)
  const keyed = objectWithOwnKeys([[name, { reader: 'x' }], ['data', objectWithOwnKeys([[name, name], ['reader', 'Hostile A'], ['command', objectWithOwnKeys([[name, 1], ['id', '1'], ['line', 'RESET']])]])]]);
  const k = await post(JSON.stringify(keyed));
  assert.equal(k.status, 200, JSON.stringify(k.json));
  assert.deepEqual(k.json, { response: [{ id: '1', line: '3B021450' }] });
  // a body that is only a prototype key, or one whose data/commands are
  for (const body of [JSON.stringify(name), `{"data":${JSON.stringify(name)}}`, `{"data":{"reader":"Hostile A","commands":${JSON.stringify(name)}}}`, `{"${name.replace(/["\\]/g, '')}":{}}`]) {
    const r = await post(body);
    assert.equal(r.status, 400, `${body}: ${JSON.stringify(r.json)}`);
  }
}

async function stillServes(): Promise<void> {
  assert.deepEqual(await ask('>Hostile A|\n>1:APDU:80EE000001AA|\n\n'), ['>1:AA9000']);
  const cf = await fetch(`${cfBase}/basic?reset=1&terminal=Hostile%20A`, { headers: { 'X-Auth-Token': CF } });
  assert.equal(await cf.text(), '3B021450\n');
  const fp = await fetch(`${fpBase}/command`, { method: 'POST', headers: { 'X-Auth-Token': FP }, body: JSON.stringify({ data: { reader: 'Hostile A', command: { id: 'x', line: 'RESET' } } }) });
  assert.deepEqual(await fp.json(), { response: [{ id: 'x', line: '3B021450' }] });
}

function noInternalErrors(): void {
  const errors = logged
    .text()
    .split('\n')
    .filter((l) => /"level":(50|60)/.test(l));
  assert.deepEqual(errors, [], 'nothing was logged as our own fault');
}

test('every Object.prototype key in every position: coded answers on the line protocol and both REST APIs', async () => {
  for (const key of PROTOTYPE_KEYS) {
    for (const name of [key, ` ${key}:${key} `, `${key}.name`, Buffer.from(key).toString('base64')]) {
      await checkLine(name);
      await checkCloudFoxy(name);
      await checkFoxyproxy(name);
    }
  }
  await stillServes();
  noInternalErrors();
});

test('property: hostile names and hostile JSON anywhere; the bridge answers each and still serves', async () => {
  await fc.assert(
    fc.asyncProperty(hostileName(), hostileJsonValue(), async (name, json) => {
      await checkLine(name);
      await checkCloudFoxy(name);
      await checkFoxyproxy(name);
      const r = await fetch(`${fpBase}/command`, { method: 'POST', headers: { 'X-Auth-Token': FP }, body: JSON.stringify(json) });
      await r.text();
      assert.ok([200, 400].includes(r.status), `${JSON.stringify(json)}: ${r.status}`);
      const d = await fetch(`${fpBase}/command`, { method: 'POST', headers: { 'X-Auth-Token': FP }, body: JSON.stringify({ data: json }) });
      await d.text();
      assert.ok([200, 400].includes(d.status), `{data: ${JSON.stringify(json)}}: ${d.status}`);
    }),
    { numRuns: 40, seed: Number(process.env.FUZZ_SEED ?? 7) },
  );
  await stillServes();
  noInternalErrors();
});
