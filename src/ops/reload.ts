/**
 * What a SIGHUP may change without a restart, and which keys of a re-read config file differ from the
 * running one. Pure: no I/O; the gateway applies the reloadable parts and logs the rest as "restart needed".
 */
import { Secret } from '../core/config/secret.ts';

/**
 * Keys applied on reload: the log level and each front end's TLS certificate files (the files are re-read
 * on every reload whether or not their paths changed, so a renewed certificate at the same path is picked
 * up). The relay's token file and the sealed API's keys and registry are re-read too (they are files,
 * not keys).
 */
const RELOADABLE = ['log.level', 'relay.tls.', 'cardBridge.tls.', 'sealedApi.tls.'];

export function isReloadable(key: string): boolean {
  return RELOADABLE.some((k) => (k.endsWith('.') ? key.startsWith(k) : key === k));
}

/** Comparable form of a leaf (a Secret compares by value, in memory only: it is never printed). */
function leaf(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (v instanceof Secret ? `secret:${v.reveal()}` : v));
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Secret);
}

/** Dotted keys whose values differ between two validated configs (arrays compare whole). */
export function changedKeys(before: unknown, after: unknown, prefix = ''): string[] {
  if (isPlainObject(before) && isPlainObject(after)) {
    const keys = new Set([...Object.keys(before), ...Object.keys(after)]);
    const out: string[] = [];
    for (const k of [...keys].sort()) {
      out.push(...changedKeys(Object.hasOwn(before, k) ? before[k] : undefined, Object.hasOwn(after, k) ? after[k] : undefined, prefix === '' ? k : `${prefix}.${k}`));
    }
    return out;
  }
  return leaf(before) === leaf(after) ? [] : [prefix === '' ? '(root)' : prefix];
}
