/**
 * `gatehouse card`: a terminal client for the card bridge's line protocol.
 *   list | aliases | reset <reader> | apdu <reader> <hex...> | chain <alias> | sign <alias> <file>
 * The PIN for `sign` comes from an environment variable (default GATEHOUSE_CARD_PIN), never from argv.
 * Exit codes: 0 ok, 1 a C08x error or a failing SW from the card, 69 the bridge is unreachable.
 */
import { Command } from 'commander';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { CardClient, type CardClientOptions } from '../card-bridge/client.ts';
import { EXIT } from './exit.ts';

interface ConnOpts {
  host: string;
  port: string;
  tls?: boolean;
  insecure?: boolean;
  timeout: string;
}

const C0_MEANING: Record<string, string> = {
  C080: 'no card in the reader',
  C081: 'unknown command',
  C082: 'the reader or alias matches more than one card',
  C083: 'reader or alias not found, or the card backend failed',
  C084: 'bad SIGN data (need a SHA-1 or SHA-256 hash)',
  C085: 'wrong PIN (or a PIN that already failed on this card)',
  C086: 'the card gave no usable answer for SIGN',
  C087: 'malformed APDU',
  C088: 'a protocol limit was exceeded',
  C089: 'the card is busy or did not answer in time',
  C090: 'internal error in the bridge',
};

function withConn(cmd: Command): Command {
  return cmd
    .option('--host <host>', 'card bridge host', '127.0.0.1')
    .option('--port <port>', 'card bridge port', '4001')
    .option('--tls', 'connect with TLS')
    .option('--insecure', 'with --tls: accept any server certificate')
    .option('--timeout <ms>', 'answer timeout in ms', '60000');
}

async function run(o: ConnOpts, reader: string, commands: string[]): Promise<{ id: string; result: string }[]> {
  const opts: CardClientOptions = { host: o.host, port: Number(o.port), tls: o.tls === true, insecure: o.insecure === true, timeoutMs: Number(o.timeout) };
  let client: CardClient;
  try {
    client = await CardClient.connect(opts);
  } catch (err) {
    process.stderr.write(`gatehouse card: cannot reach the card bridge at ${o.host}:${o.port}: ${(err as Error).message}\n`);
    process.exit(EXIT.unavailable);
  }
  try {
    return await client.request(reader, commands);
  } finally {
    client.close();
  }
}

/** Exits 1 when the result is a bridge error code; returns the result otherwise. */
function checked(result: string | undefined): string {
  if (result === undefined) {
    process.stderr.write('gatehouse card: no answer\n');
    process.exit(EXIT.failure);
  }
  const meaning = C0_MEANING[result];
  if (meaning !== undefined) {
    process.stderr.write(`gatehouse card: ${result}: ${meaning}\n`);
    process.exit(EXIT.failure);
  }
  return result;
}

const listing = (r: string): string[] => (r === '' ? [] : r.split('|').map((x) => Buffer.from(x, 'base64').toString('utf8')));

export function cardCommand(): Command {
  const card = new Command('card').description('Talk to a card bridge: list readers, reset, send APDUs, sign a file.');

  withConn(card.command('list').description('List every reader.')).action(async (o: ConnOpts) => {
    const [a] = await run(o, '*', ['1:LIST']);
    for (const name of listing(checked(a?.result))) process.stdout.write(`${name}\n`);
  });

  withConn(card.command('aliases').description('List the certificate subjects of the signing cards.')).action(async (o: ConnOpts) => {
    const [a] = await run(o, 'all readers', ['1:ALIASES']);
    for (const name of listing(checked(a?.result))) process.stdout.write(`${name}\n`);
  });

  withConn(card.command('reset').description("Reset a reader's card and print its ATR.").argument('<reader>')).action(async (reader: string, o: ConnOpts) => {
    const [a] = await run(o, reader, ['1:RESET']);
    process.stdout.write(`${checked(a?.result)}\n`);
  });

  withConn(
    card
      .command('apdu')
      .description('Send APDUs (hex) in one request, atomically on the card; prints each response (data + SW).')
      .argument('<reader>')
      .argument('<apdu...>'),
  ).action(async (reader: string, apdus: string[], o: ConnOpts) => {
    const answers = await run(
      o,
      reader,
      apdus.map((x, i) => `${i + 1}:APDU:${x.replace(/\s+/g, '')}`),
    );
    let failed = false;
    for (const a of answers) {
      const meaning = C0_MEANING[a.result];
      if (meaning !== undefined) failed = true;
      process.stdout.write(meaning === undefined ? `${a.result}\n` : `${a.result} (${meaning})\n`);
    }
    if (failed) process.exitCode = EXIT.failure;
  });

  withConn(card.command('chain').description('Print the certificate chain (PEM) of the card matching an alias.').argument('<alias>')).action(async (alias: string, o: ConnOpts) => {
    const [a] = await run(o, alias, ['1:CHAIN']);
    for (const b64 of checked(a?.result).split(':')) {
      process.stdout.write(`-----BEGIN CERTIFICATE-----\n${b64.replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END CERTIFICATE-----\n`);
    }
  });

  withConn(
    card
      .command('sign')
      .description("Hash a file (SHA-256, or SHA-1) and sign the hash on the card matching an alias; prints the signature hex.")
      .argument('<alias>')
      .argument('<file>')
      .option('--sha1', 'use SHA-1 instead of SHA-256')
      .option('--pin-env <var>', 'environment variable holding the PIN', 'GATEHOUSE_CARD_PIN')
      .option('--out <file>', 'write the raw signature to this file'),
  ).action(async (alias: string, file: string, o: ConnOpts & { sha1?: boolean; pinEnv: string; out?: string }) => {
    const hash = createHash(o.sha1 === true ? 'sha1' : 'sha256')
      .update(await readFile(file))
      .digest('hex')
      .toUpperCase();
    const pin = process.env[o.pinEnv];
    if (alias.includes('|')) {
      process.stderr.write('gatehouse card: an alias cannot contain "|"\n');
      process.exit(EXIT.usage);
    }
    const [a] = await run(o, pin === undefined || pin === '' ? alias : `${alias}:${pin}`, [`1:SIGN:${hash}`]);
    const sig = checked(a?.result);
    if (!/^([0-9A-F]{2}){5,}$/.test(sig)) {
      process.stderr.write(`gatehouse card: the card answered SW ${sig}\n`);
      process.exit(EXIT.failure);
    }
    if (o.out !== undefined) await writeFile(o.out, Buffer.from(sig, 'hex'));
    process.stdout.write(`${sig}\n`);
  });

  return card;
}
