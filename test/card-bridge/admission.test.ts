/**
 * Who may connect to the card bridge and how much they can make it hold: the shared memory budget for
 * unfinished and queued requests (the line protocol has no authentication), per-listener allow-lists of
 * client networks, and TLS client certificates.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { readFileSync } from 'node:fs';
import { startBridge, LineClient } from './helpers.ts';
import { captureLog, selfSignedCert, tempDir } from '../helpers/relay.ts';
import { validateConfig } from '../../src/core/config/load.ts';
import { cardBridgeConfigSchema } from '../../src/card-bridge/config.ts';
import { isGatewayError } from '../../src/core/errors.ts';

const BUDGET = 65536;

test('the memory budget is shared by all connections: exactly full is held; one byte past it answers that connection C089 and closes it; the others go on', async () => {
  const cap = captureLog();
  const bridge = await startBridge({ log: cap.log, cards: [{ name: 'Gatehouse Sim 00' }], config: { limits: { maxBufferedBytes: BUDGET } } });
  try {
    const a = await LineClient.connect(bridge.port);
    const b = await LineClient.connect(bridge.port);
    // Held bytes: each complete line of the request with its line end, plus the unfinished line.
    const aReader = '>Gatehouse Sim 00|\n';
    const aPartial = `>1:APDU:00A40400${'00'.repeat(10_000)}`;
    a.send(aReader + aPartial);
    const bReader = '>Gatehouse Sim 00|\n';
    const bFill = BUDGET - (aReader.length + aPartial.length) - bReader.length;
    const bPartial = `>7:APDU:${'0'.repeat(bFill - 8)}`;
    b.send(bReader + bPartial);
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(b.isClosed, false, 'exactly at the budget is allowed');
    assert.equal(b.text, '');
    b.send('0');
    await b.closed(3000);
    assert.equal(b.text, '>7:C089\n@@\n');
    assert.ok(cap.records().some((r) => r.code === 'CARD_LIMIT_BUFFERED' && r.level === 'warn'));
    // A was not disturbed: it finishes its request and gets its answer (an APDU too long for a short Lc).
    a.send('\n\n');
    const answer = await a.answers(1, 5000);
    assert.match(answer, /^>1:[0-9A-F]{4}\n@@\n$/);
    // Once A's request is answered its bytes are free again: a new large request fits.
    const c = await LineClient.connect(bridge.port);
    c.send(`>Gatehouse Sim 00|\n>2:APDU:${'0'.repeat(BUDGET - 100)}`);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(c.isClosed, false);
  } finally {
    await bridge.close();
  }
});

function closesWithoutAnswer(port: number, localAddress: string): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    const s: Socket = connect({ host: '127.0.0.1', port, localAddress });
    s.on('data', (d: Buffer) => (got += d.toString()));
    s.on('error', () => undefined);
    s.on('close', () => resolve(got));
    s.on('connect', () => s.write('>*|\n>1:LIST\n\n'));
    setTimeout(() => s.destroy(), 3000).unref();
  });
}

test('allowFrom: a listener serves only the configured client networks; others are closed unanswered and logged', async () => {
  const cap = captureLog();
  const bridge = await startBridge({
    log: cap.log,
    cards: [{ name: 'Gatehouse Sim 00' }],
    config: {
      listeners: [{ kind: 'tcp', host: '127.0.0.1', port: 0, allowFrom: ['127.0.0.2/32', '10.0.0.0/8'] }],
      cloudfoxyApi: { enabled: true, port: 0, token: 'tok', allowFrom: ['127.0.0.2'] },
    },
  });
  try {
    assert.equal(await closesWithoutAnswer(bridge.port, '127.0.0.1'), '');
    assert.ok(cap.records().some((r) => r.code === 'CARD_CLIENT_NOT_ALLOWED' && r.remote === '127.0.0.1'));
    const ok = await LineClient.connect(bridge.port, connect({ host: '127.0.0.1', port: bridge.port, localAddress: '127.0.0.2' }));
    assert.match(await ok.request('>*|\n>1:LIST\n\n'), /^>1:/);
    const rest = bridge.server.listeners.find((l) => l.kind === 'cloudfoxy-api')!.port;
    assert.equal(await closesWithoutAnswer(rest, '127.0.0.1'), '');
  } finally {
    await bridge.close();
  }
});

test('allowFrom entries are validated with the config: a bad network is a config error naming the key', () => {
  assert.throws(
    () => validateConfig(cardBridgeConfigSchema, { listeners: [{ kind: 'tcp', port: 0, allowFrom: ['10.0.0.0/33', 'not-an-ip'] }] }),
    (e: unknown) => isGatewayError(e, 'CORE_CONFIG_INVALID') && /listeners\[0\]\.allowFrom\[0\]/.test(e.message) && /allowFrom\[1\]/.test(e.message),
  );
});

test('TLS client certificates: with tls.clientCaFile, a client without a certificate (or with another one) fails the handshake; one with it is served', async () => {
  const serverDir = tempDir();
  const clientDir = tempDir();
  const otherDir = tempDir();
  const server = selfSignedCert(serverDir);
  const client = selfSignedCert(clientDir);
  const other = selfSignedCert(otherDir);
  const bridge = await startBridge({
    cards: [{ name: 'Gatehouse Sim 00' }],
    config: { listeners: [{ kind: 'tls', host: '127.0.0.1', port: 0 }], tls: { ...server, clientCaFile: client.certFile } },
  });
  const ca = readFileSync(server.certFile);
  const attempt = (cert?: { certFile: string; keyFile: string }) =>
    new Promise<string>((resolve) => {
      const s = tlsConnect({ host: '127.0.0.1', port: bridge.port, ca, servername: 'localhost', ...(cert === undefined ? {} : { cert: readFileSync(cert.certFile), key: readFileSync(cert.keyFile) }) });
      let got = '';
      s.on('secureConnect', () => s.write('>*|\n>1:LIST\n\n'));
      s.on('data', (d: Buffer) => {
        got += d.toString();
        if (got.endsWith('@@\n')) s.end();
      });
      s.on('error', (e: Error) => resolve(`error: ${e.message}`));
      s.on('close', () => resolve(got));
    });
  try {
    assert.match(await attempt(client), /^>1:.*\n@@\n$/s);
    assert.doesNotMatch(await attempt(), /^>1:/);
    assert.doesNotMatch(await attempt(other), /^>1:/);
  } finally {
    await bridge.close();
  }
});
