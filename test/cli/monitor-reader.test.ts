/**
 * What `gatehouse monitor` reads from the monitor socket: compact answers to `refresh` and, when it
 * connects just before the relay's push tick, a pushed document in Qt's indented form. Both, split at any
 * point, give the same documents; the pushed form is read from a real relay monitor socket.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { MonitorDocReader } from '../../src/cli/monitor.ts';
import { toCompactJson, toIndentedJson } from '../../src/relay/protocol/json.ts';
import { deadline, startRelay } from '../helpers/relay.ts';

const doc = { apiVersion: '5', proxyStatistic: { clientCount: 1, clients: [{ name: 'a', uuid: '{x}' }], tunnels: [] }, serverName: 'gatehouse' };
// As the relay writes them: a compact line, and a push (indented, then nymea's extra newline).
const stream = `${toCompactJson(doc)}\n${toIndentedJson(doc)}\n${toCompactJson({ ...doc, apiVersion: '6' })}\n`;

test('compact and indented documents, split at every character, come out whole and in order', () => {
  for (let cut = 0; cut <= stream.length; cut++) {
    const r = new MonitorDocReader();
    const docs = [...r.push(stream.slice(0, cut)), ...r.push(stream.slice(cut))];
    assert.deepEqual(
      docs.map((d) => JSON.parse(d) as unknown),
      [doc, doc, { ...doc, apiVersion: '6' }],
      `cut at ${cut}`,
    );
    assert.equal(r.pendingChars, 0);
  }
});

test('a pushed document from a real relay monitor (no refresh sent) is read whole', async () => {
  const relay = await startRelay({ monitor: { intervalMs: 50 } });
  try {
    const socket = connect({ path: relay.server.monitorPath! });
    socket.setEncoding('utf8');
    const r = new MonitorDocReader();
    const first = await deadline(
      new Promise<string>((resolve) => socket.on('data', (t: string) => {
        const d = r.push(t)[0];
        if (d !== undefined) resolve(d);
      })),
      5000,
      'a pushed document',
    );
    socket.destroy();
    assert.match(first, /^\{\n {4}"apiVersion"/);
    assert.equal((JSON.parse(first) as { serverName: string }).serverName, 'gatehouse');
  } finally {
    await relay.close();
  }
});
