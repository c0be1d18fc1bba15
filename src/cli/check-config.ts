/**
 * `gatehouse check-config FILE [--json]`: validates a config file the way `serve` would and prints the
 * effective configuration (every default filled in) as TOML or JSON, secrets shown as `[redacted]`.
 *
 * Checked: the schema (every problem at once, with its key), that a front end is enabled, and the files the
 * enabled front ends name that `serve` would refuse to start without: TLS material (the key must match the
 * certificate) and the relay's static token file. Problems exit 78 (EX_CONFIG), like `serve`. It opens no
 * socket and writes no file (the sealed API's keys and registry are created by `serve` on first start).
 * The printed TOML is itself a valid config that gives the same output again (secrets aside).
 */
import { Command } from 'commander';
import { dirname, resolve } from 'node:path';
import { stringify as stringifyToml } from 'smol-toml';
import { loadGatewayConfig, type GatewayConfig } from '../config.ts';
import { Secret } from '../core/config/secret.ts';
import { GatewayError, isGatewayError } from '../core/errors.ts';
import { loadTlsFiles, type TlsFiles } from '../core/tls.ts';
import { enabledFrontEnds, NO_FRONT_END } from '../gateway.ts';
import { parseTokenFile, readTokenFile } from '../relay/authenticators/static.ts';
import { EXIT, reportAndExit } from './exit.ts';

const REDACTED = '[redacted]';
/** Plain-string keys that hold a secret even where the schema has no Secret type (a simulated card's PIN). */
const SECRET_KEY = /^(pin|puk|password|passphrase|secret\w*|token|bearer)$/i;
const FRONT_ENDS = ['relay', 'cardBridge', 'sealedApi'] as const;

/** A password inside a URL (`https://user:pw@host/`) is a secret too, even in a plain string key. */
function redactUrlPassword(s: string): string {
  return s.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/?#@:\s]*:)[^/?#@\s]*@/i, `$1${REDACTED}@`);
}

/**
 * The config as plain data for printing: Secrets, secret-named string keys and URL passwords become
 * `[redacted]` (so does any other class instance: it is not known to be safe to print), undefined keys are
 * dropped, a disabled section (front end, `[ops]`) is `{ enabled: false }` (its defaults do not apply).
 */
export function effectiveConfig(config: GatewayConfig): Record<string, unknown> {
  const plain = (value: unknown, key: string): unknown => {
    if (value instanceof Secret) return REDACTED;
    if (typeof value === 'string') return SECRET_KEY.test(key) ? REDACTED : redactUrlPassword(value);
    if (Array.isArray(value)) return value.map((v) => plain(v, key));
    if (value !== null && typeof value === 'object') {
      if (Object.getPrototypeOf(value) !== Object.prototype) return value instanceof Date ? value : REDACTED;
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) if (v !== undefined) out[k] = plain(v, k);
      return out;
    }
    return value;
  };
  const out = plain(config, '') as Record<string, unknown>;
  for (const [name, section] of Object.entries(out)) {
    if (section !== null && typeof section === 'object' && (section as { enabled?: unknown }).enabled === false) out[name] = { enabled: false };
  }
  return out;
}

/** Every `tls` section (certificate files) inside `value`, with its dotted key. */
function tlsSections(value: unknown, key: string, found: { key: string; files: TlsFiles }[]): typeof found {
  if (Array.isArray(value)) value.forEach((v, i) => tlsSections(v, `${key}[${i}]`, found));
  else if (value !== null && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      if (k === 'tls' && v !== null && typeof v === 'object' && Object.hasOwn(v, 'certFile')) found.push({ key: `${key}.tls`, files: v as TlsFiles });
      else tlsSections(v, `${key}.${k}`, found);
    }
  }
  return found;
}

/** The problems `serve` would meet after the schema: no front end, unreadable TLS material, a bad token file. */
export async function checkNamedFiles(config: GatewayConfig, baseDir: string): Promise<GatewayError[]> {
  const problems: GatewayError[] = [];
  const attempt = async (key: string, check: () => Promise<unknown>) => {
    try {
      await check();
    } catch (err) {
      if (!isGatewayError(err)) throw err;
      problems.push(new GatewayError(err.code, `${key}: ${err.message}`));
    }
  };
  const enabled = enabledFrontEnds(config);
  if (enabled.length === 0) problems.push(new GatewayError('CORE_CONFIG_INVALID', NO_FRONT_END));
  for (const name of FRONT_ENDS) {
    if (!enabled.includes(name)) continue;
    for (const { key, files } of tlsSections(config[name], name, [])) await attempt(key, () => loadTlsFiles(files, baseDir));
  }
  const auth = config.relay.authenticator;
  if (config.relay.enabled && auth.kind === 'static') {
    const path = resolve(baseDir, auth.file);
    await attempt('relay.authenticator.file', async () => parseTokenFile((await readTokenFile(path)).text, path));
  }
  return problems;
}

export function checkConfigCommand(): Command {
  return new Command('check-config')
    .description('Validate a config file and print the effective configuration (defaults filled in, secrets redacted).')
    .argument('<file>', 'TOML config file')
    .option('--json', 'print JSON instead of TOML')
    .action(async (file: string, opts: { json?: boolean }) => {
      const baseDir = dirname(resolve(file));
      let problems: GatewayError[];
      let config: GatewayConfig;
      try {
        config = await loadGatewayConfig(file);
        problems = await checkNamedFiles(config, baseDir);
      } catch (err) {
        reportAndExit(err, 'check-config');
      }
      if (problems.length > 0) {
        for (const p of problems) process.stderr.write(`gatehouse check-config: ${p.code}: ${p.message}\n`);
        process.stderr.write(`gatehouse check-config: ${file}: ${problems.length} problem${problems.length === 1 ? '' : 's'}\n`);
        process.exit(EXIT.config);
      }
      const effective = effectiveConfig(config);
      if (opts.json === true) {
        process.stdout.write(`${JSON.stringify(effective, null, 2)}\n`);
        return;
      }
      process.stdout.write(
        [
          `# ${resolve(file)}: valid (${enabledFrontEnds(config).join(', ')} enabled).`,
          '# The effective configuration: every default filled in, secrets shown as [redacted].',
          `# Relative paths are relative to ${baseDir}.`,
          '',
          stringifyToml(effective),
          '',
        ].join('\n'),
      );
    });
}
