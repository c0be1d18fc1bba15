/**
 * `gatehouse init [DIR]`: writes a working, commented starting point for production: gatehouse.toml,
 * a token file with one fresh token (shown once), and, with --tls, a self-signed certificate made with
 * the openssl CLI. Never overwrites existing files nor writes through a symlink by a target's name: if
 * one exists, nothing is written and it exits 73 (EX_CANTCREAT). Secrets (the token file, the TLS key)
 * are created 0600; the token is printed once on stdout, never logged.
 */
import { Command } from 'commander';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { hashToken } from '../relay/authenticators/static.ts';
import { cliCommand } from '../gateway.ts';
import { CliError, EXIT, reportAndExit } from './exit.ts';

export interface InitOptions {
  readonly dir: string;
  /** Bind 0.0.0.0 instead of loopback. */
  readonly public: boolean;
  /** Add TLS and WSS listeners with a self-signed certificate. */
  readonly tls: boolean;
}

/** The config file text for these options. */
export function renderInitConfig(opts: InitOptions): string {
  const host = opts.public ? '0.0.0.0' : '127.0.0.1';
  const listeners = [
    `  { kind = "ws", host = "${host}", port = 1212 },`,
    `  { kind = "tcp", host = "${host}", port = 1213 },`,
    ...(opts.tls ? [`  { kind = "tls", host = "${host}", port = 1215 },`, `  { kind = "wss", host = "${host}", port = 1216 },`] : []),
  ];
  return [
    '# Gatehouse configuration. Every key and its default: docs/configuration.md',
    '',
    '[log]',
    'level = "info"',
    '',
    '[shutdown]',
    '# How long open tunnels may drain after SIGTERM before they are closed.',
    'graceMs = 10000',
    '',
    '[relay]',
    '# nymea-remoteproxy 1.8.4 compatible rendezvous tunnels.',
    'listeners = [',
    ...listeners,
    ']',
    '',
    '[relay.hello]',
    'name = "gatehouse"',
    '',
    ...(opts.tls ? ['[relay.tls]', '# Self-signed: replace with your certificate for production.', 'certFile = "cert.pem"', 'keyFile = "key.pem"', ''] : []),
    '[relay.authenticator]',
    '# Clients authenticate with a token from this file; add one with `gatehouse tokens hash <token>`.',
    'kind = "static"',
    'file = "tokens"',
    '',
    '[relay.limits]',
    'maxConnectionsPerIp = 1000',
    'maxAuthFailuresPerIp = 20',
    '',
    '[relay.monitor]',
    '# Watch it with: gatehouse monitor --config gatehouse.toml',
    'path = "gatehouse-monitor.sock"',
    '',
    '[ops]',
    '# Prometheus /metrics, /healthz and /readyz for your monitoring (loopback: expose it deliberately).',
    'host = "127.0.0.1"',
    'port = 9180',
    '',
    '# The other front ends run when their section is present. Uncomment to enable.',
    '',
    '# Card bridge (foxyproxy line protocol on 4001): docs/card-bridge.md',
    '# [cardBridge]',
    `# listeners = [{ kind = "tcp", host = "${host}", port = 4001 }]`,
    '# backends = [{ kind = "pcsc" }]',
    '',
    '# Sealed API (end-to-end encrypted actions on config files): docs/sealed-api.md',
    '# [sealedApi]',
    `# host = "${host}"`,
    '# port = 1214',
    '# [sealedApi.files.wg0]',
    '# path = "/etc/wireguard/wg0.conf"',
    '# format = "wireguard"',
    '# postWrite = ["wg", "syncconf", "wg0", "/etc/wireguard/wg0.conf"]',
    '',
  ].join('\n');
}

/** A failed file system call as a CliError: exit 73 (cannot create), the path and errno in the message. */
function cannotCreate(err: unknown, what: string): CliError {
  const code = (err as { code?: unknown }).code;
  return new CliError(`cannot create ${what}: ${typeof code === 'string' ? code : String(err)}`, EXIT.cantCreate);
}

/**
 * Writes the files; returns the generated token.
 * @throws CliError exit 73 if a target file exists (nothing is written) or cannot be created; exit 69 when
 *   --tls is asked and openssl cannot run.
 */
export function initDirectory(opts: InitOptions): { token: string; files: string[] } {
  try {
    // A folder made here holds the token file and, with --tls, the private key: private to its owner
    // (an existing folder keeps its mode, e.g. /etc/gatehouse 0750 root:gatehouse as operations.md sets).
    mkdirSync(opts.dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw cannotCreate(err, opts.dir);
  }
  const config = join(opts.dir, 'gatehouse.toml');
  const tokens = join(opts.dir, 'tokens');
  const cert = join(opts.dir, 'cert.pem');
  const key = join(opts.dir, 'key.pem');
  const targets = [config, tokens, ...(opts.tls ? [cert, key] : [])];
  // lstat, not exists: a symlink (dangling or not) is there too, and nothing is written through it.
  const existing = targets.filter((f) => {
    try {
      lstatSync(f);
      return true;
    } catch {
      return false;
    }
  });
  if (existing.length > 0)
    throw new CliError(`refusing to overwrite ${existing.join(', ')} (remove them or choose another directory)`, EXIT.cantCreate);
  const token = randomBytes(24).toString('base64url');
  // 'wx' (O_CREAT|O_EXCL): a file or link that appeared since the check is not overwritten or followed.
  const create = (path: string, data: string | Buffer, mode: number) => writeFileSync(path, data, { mode, flag: 'wx' });
  // The certificate first: when openssl is missing, nothing else has been written and a second run works.
  // openssl writes into a private scratch folder (it would follow a link at the target); we copy from it.
  let pem: { cert: Buffer; key: Buffer } | undefined;
  if (opts.tls) {
    const scratch = mkdtempSync(join(tmpdir(), 'gatehouse-init-'));
    try {
      execFileSync('openssl', [
        'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '825',
        '-subj', '/CN=gatehouse', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
        '-keyout', join(scratch, 'key.pem'), '-out', join(scratch, 'cert.pem'),
      ], { stdio: 'ignore' });
      pem = { cert: readFileSync(join(scratch, 'cert.pem')), key: readFileSync(join(scratch, 'key.pem')) };
    } catch (err) {
      if ((err as { code?: unknown }).code === 'ENOENT') throw new CliError('--tls needs the openssl command: install it, or run init without --tls', EXIT.unavailable);
      throw cannotCreate(err, `${cert} and ${key} with openssl`);
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
  }
  try {
    if (pem !== undefined) {
      create(key, pem.key, 0o600);
      create(cert, pem.cert, 0o644);
    }
    create(tokens, `# Relay tokens: sha256:<hex> [user]. Add lines with: gatehouse tokens hash <token> --user NAME\n${hashToken(token, 'first-client')}\n`, 0o600);
    create(config, renderInitConfig(opts), 0o640);
  } catch (err) {
    throw cannotCreate(err, `the files in ${opts.dir}`);
  }
  return { token, files: targets };
}

export function initCommand(): Command {
  return new Command('init')
    .description('Write a starting configuration (gatehouse.toml, a token file, optionally a TLS certificate).')
    .argument('[dir]', 'directory to write into', '.')
    .option('--public', 'listen on all interfaces instead of loopback')
    .option('--tls', 'add TLS and secure WebSocket listeners with a self-signed certificate (needs openssl)')
    .action((dir: string, opts: { public?: boolean; tls?: boolean }) => {
      const target = resolve(dir);
      let written: { token: string; files: string[] };
      try {
        written = initDirectory({ dir: target, public: opts.public === true, tls: opts.tls === true });
      } catch (err) {
        reportAndExit(err, 'init');
      }
      const { token, files } = written;
      process.stdout.write(
        [
          `Wrote ${files.join(', ')}.`,
          '',
          `Relay token (shown once; only its hash is stored): ${token}`,
          '',
          `Start:   ${cliCommand()} serve --config ${join(target, 'gatehouse.toml')}`,
          `Connect: ${cliCommand()} tunnel --url tcp://127.0.0.1:1213 --token ${token}   (run it twice to pair)`,
          '',
        ].join('\n'),
      );
    });
}
