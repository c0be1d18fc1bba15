/**
 * The format registry: for each managed-file format, how to validate whole content and how to apply
 * format-aware operations (`files.update`). Both throw FormatError (→ 422) and never touch the disk.
 */
import { z } from 'zod';
import type { FileFormat } from '../config.ts';
import { FormatError } from './lines.ts';
import { applyWireGuardOps, validateWireGuard, wireGuardOpSchema } from './wireguard.ts';
import { applyIniOps, iniOpSchema, validateIni } from './ini.ts';
import {
  applyJsonOps,
  applyTomlOps,
  applyYamlOps,
  pathOpSchema,
  validateJson,
  validateToml,
  validateYaml,
} from './structured.ts';

export { FormatError } from './lines.ts';

export interface Format {
  validate(text: string): void;
  /** Parses `ops` against the format's operation schema and applies them. */
  apply(text: string, ops: unknown): string;
}

const MAX_OPS = 256;
/**
 * Deepest nesting of `ops` (the list, an operation, its value): no config nests this deep, and writing a
 * value back (JSON.stringify, the TOML and YAML writers) recurses, so a deeper one overflowed the stack.
 */
export const MAX_OPS_DEPTH = 64;

/** True when `v` nests deeper than `max` arrays/objects (iterative: never recurses on client input). */
function nestedDeeperThan(v: unknown, max: number): boolean {
  const stack: [unknown, number][] = [[v, 1]];
  while (stack.length > 0) {
    const [x, depth] = stack.pop()!;
    if (x === null || typeof x !== 'object') continue;
    if (depth > max) return true;
    for (const child of Object.values(x)) if (child !== null && typeof child === 'object') stack.push([child, depth + 1]);
  }
  return false;
}

function withOps<T>(
  schema: z.ZodType<T>,
  apply: (text: string, ops: T[]) => string,
): (text: string, ops: unknown) => string {
  const list = z.array(schema).min(1).max(MAX_OPS);
  return (text, ops) => {
    if (nestedDeeperThan(ops, MAX_OPS_DEPTH)) throw new FormatError(`ops: nested deeper than ${MAX_OPS_DEPTH} levels`);
    const parsed = list.safeParse(ops);
    if (!parsed.success) {
      const i = parsed.error.issues[0];
      throw new FormatError(
        `ops${i === undefined ? '' : `.${i.path.join('.')}`}: ${i?.message ?? 'invalid'}`,
      );
    }
    return apply(text, parsed.data);
  };
}

/** The formats by name (a Map: never an inherited key). */
export const FORMATS: ReadonlyMap<FileFormat, Format> = new Map<FileFormat, Format>([
  [
    'wireguard',
    {
      validate: (t) => {
        validateWireGuard(t);
      },
      apply: withOps(wireGuardOpSchema, applyWireGuardOps),
    },
  ],
  ['ini', { validate: validateIni, apply: withOps(iniOpSchema, applyIniOps) }],
  [
    'toml',
    {
      validate: (t) => {
        validateToml(t);
      },
      apply: withOps(pathOpSchema, applyTomlOps),
    },
  ],
  ['yaml', { validate: validateYaml, apply: withOps(pathOpSchema, applyYamlOps) }],
  [
    'json',
    {
      validate: (t) => {
        validateJson(t);
      },
      apply: withOps(pathOpSchema, applyJsonOps),
    },
  ],
]);

/** The format of a managed file. @throws Error for a name that is not a format (config validation prevents it). */
export function formatOf(name: FileFormat): Format {
  const f = FORMATS.get(name);
  if (f === undefined) throw new Error(`no file format ${name}`);
  return f;
}
