/**
 * The config pipeline: TOML text → parse → schema (zod) → deep-frozen object.
 *
 * Every problem is reported at once, each with the file and the dotted key that is wrong. Defaults live
 * only in the schemas; unknown keys are rejected by the schemas (`z.strictObject`). This module knows no
 * front end: the composition root passes the schema to validate against.
 */
import { readFile } from 'node:fs/promises';
import { parse as parseToml, TomlError } from 'smol-toml';
import type { z } from 'zod';
import { GatewayError } from '../errors.ts';

/** One validation problem: the dotted key path and what is wrong with it. */
export interface ConfigIssue {
  readonly key: string;
  readonly message: string;
}

/** Deep-freezes plain objects and arrays in place (class instances such as Secret are left alone). */
export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && (Array.isArray(value) || Object.getPrototypeOf(value) === Object.prototype)) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

function keyOf(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? String(part) : `.${String(part)}`;
  }
  return out === '' ? '(root)' : out;
}

/** Keys an earlier release used, and the key that replaced each (an unknown-key error names the new one). */
const RENAMED_KEYS = new Map([
  ['maxFailedAuthPerIp', 'maxAuthFailuresPerIp'],
  ['failedAuthWindowMs', 'authFailureWindowMs'],
]);

/** Turns zod's issues into our flat list, expanding unrecognized keys into one issue each. */
export function configIssues(error: z.ZodError): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  for (const issue of error.issues) {
    if (issue.code === 'unrecognized_keys') {
      for (const k of issue.keys) {
        const renamed = RENAMED_KEYS.get(k);
        issues.push({ key: keyOf([...issue.path, k]), message: renamed === undefined ? 'unknown key' : `unknown key (renamed to ${renamed})` });
      }
    } else {
      issues.push({ key: keyOf(issue.path), message: issue.message });
    }
  }
  return issues;
}

/**
 * Validates an already-parsed document against `schema`.
 * @throws GatewayError CORE_CONFIG_INVALID listing every issue (in `details.issues`).
 */
export function validateConfig<S extends z.ZodType>(schema: S, raw: unknown, source = '<embedded defaults>'): z.output<S> {
  const result = schema.safeParse(raw);
  if (!result.success) {
    const issues = configIssues(result.error);
    const lines = issues.map((i) => `  ${source}: ${i.key}: ${i.message}`);
    throw new GatewayError('CORE_CONFIG_INVALID', `invalid configuration (${issues.length} problem${issues.length === 1 ? '' : 's'}):\n${lines.join('\n')}`, {
      details: { source, issues },
    });
  }
  return deepFreeze(result.data);
}

/** Parses TOML text. @throws GatewayError CORE_CONFIG_UNREADABLE with line and column. */
export function parseConfigText(text: string, source: string): unknown {
  try {
    return parseToml(text);
  } catch (err) {
    const where = err instanceof TomlError ? ` at line ${err.line}, column ${err.column}` : '';
    const msg = err instanceof Error ? err.message.split('\n')[0] ?? '' : String(err);
    throw new GatewayError('CORE_CONFIG_UNREADABLE', `${source}: not valid TOML${where}: ${msg}`, { cause: err });
  }
}

/**
 * Reads, parses and validates a config file.
 * @throws GatewayError CORE_CONFIG_UNREADABLE or CORE_CONFIG_INVALID.
 */
export async function loadConfigFile<S extends z.ZodType>(schema: S, path: string): Promise<z.output<S>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new GatewayError('CORE_CONFIG_UNREADABLE', `cannot read config file ${path} (${code})`, { cause: err });
  }
  return validateConfig(schema, parseConfigText(text, path), path);
}
