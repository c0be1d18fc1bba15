/**
 * TOML, YAML and JSON files, edited by path (`set` / `delete`).
 * - YAML: `yaml`'s Document API, so comments and layout of untouched nodes are kept.
 * - JSON: the file's indentation (detected) and its final newline are kept.
 * - TOML: `smol-toml` parses and writes; comments are not kept on edit (documented limitation).
 */
import { z } from 'zod';
import { parse as parseToml, stringify as stringifyToml } from 'smol-toml';
import { parseDocument, isMap, isScalar, isSeq, type Document } from 'yaml';
import { FormatError } from './lines.ts';

const pathSchema = z
  .array(z.union([z.string(), z.number().int().min(0)]))
  .min(1)
  .max(32);
export const pathOpSchema = z.discriminatedUnion('op', [
  z.strictObject({ op: z.literal('set'), path: pathSchema, value: z.unknown() }),
  z.strictObject({ op: z.literal('delete'), path: pathSchema }),
]);
export type PathOp = z.output<typeof pathOpSchema>;

const FORBIDDEN = new Set(['__proto__', 'constructor', 'prototype']);

type Obj = Record<string, unknown>;

/** Arrays take integer indexes (at most one past the end); objects take string keys. */
function checkKey(container: Obj, k: string | number, path: readonly (string | number)[]): void {
  if (Array.isArray(container)) {
    if (typeof k !== 'number' || k > container.length)
      throw new FormatError(`path ${path.join('.')}: not an index of the array`);
  } else if (typeof k !== 'string') {
    throw new FormatError(`path ${path.join('.')}: ${k} is an index but the value is an object`);
  }
}

/** TOML has no null: refuse it anywhere in a value. */
function checkTomlValue(v: unknown, path: readonly (string | number)[]): void {
  if (v === null || v === undefined) throw new FormatError(`path ${path.join('.')}: TOML has no null`);
  if (typeof v === 'object') for (const x of Object.values(v)) checkTomlValue(x, path);
}

function setPath(root: Obj, path: readonly (string | number)[], value: unknown, del: boolean): void {
  let node: unknown = root;
  for (let i = 0; i < path.length - 1; i++) {
    const k = path[i]!;
    if (typeof k === 'string' && FORBIDDEN.has(k)) throw new FormatError(`path segment ${k} is not allowed`);
    const container = node as Obj;
    checkKey(container, k, path.slice(0, i + 1));
    let next = Object.hasOwn(container, k) ? container[k] : undefined;
    if (next === undefined) {
      if (del) throw new FormatError(`path ${path.slice(0, i + 1).join('.')} does not exist`);
      next = typeof path[i + 1] === 'number' ? [] : {};
      container[k] = next;
    } else if (next === null || typeof next !== 'object') {
      throw new FormatError(`path ${path.slice(0, i + 1).join('.')} is not an object or array`);
    }
    node = next;
  }
  const last = path[path.length - 1]!;
  if (typeof last === 'string' && FORBIDDEN.has(last))
    throw new FormatError(`path segment ${last} is not allowed`);
  const container = node as Obj;
  checkKey(container, last, path);
  if (del) {
    if (!Object.hasOwn(container, last)) throw new FormatError(`path ${path.join('.')} does not exist`);
    if (Array.isArray(container)) container.splice(Number(last), 1);
    else Reflect.deleteProperty(container, last);
  } else {
    container[last] = value;
  }
}

export function validateJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new FormatError(`not valid JSON: ${(err as Error).message}`);
  }
}

/** Indentation of a JSON text: the leading whitespace of its first indented line (default two spaces). */
export function detectJsonIndent(text: string): string | number {
  const m = /\n([ \t]+)\S/.exec(text);
  if (m === null) return text.trimStart().startsWith('{') && text.includes('\n') ? 2 : 0;
  return m[1]!;
}

export function applyJsonOps(text: string, ops: readonly PathOp[]): string {
  const root = validateJson(text);
  if (root === null || typeof root !== 'object')
    throw new FormatError('the JSON root is not an object or array');
  for (const op of ops)
    setPath(root as Obj, op.path, op.op === 'set' ? op.value : undefined, op.op === 'delete');
  const indent = detectJsonIndent(text);
  const finalNewline = /\r?\n$/.exec(text)?.[0] ?? '';
  let out = JSON.stringify(root, null, indent === 0 ? undefined : indent);
  if (text.includes('\r\n')) out = out.replace(/\n/g, '\r\n');
  return out + finalNewline;
}

export function validateToml(text: string): Obj {
  try {
    return parseToml(text);
  } catch (err) {
    throw new FormatError(`not valid TOML: ${(err as Error).message.split('\n')[0] ?? ''}`);
  }
}

export function applyTomlOps(text: string, ops: readonly PathOp[]): string {
  const root = validateToml(text);
  for (const op of ops) {
    if (op.op === 'set') checkTomlValue(op.value, op.path);
    setPath(root, op.path, op.op === 'set' ? op.value : undefined, op.op === 'delete');
  }
  let out: string;
  try {
    out = stringifyToml(root);
  } catch (err) {
    throw new FormatError(`cannot write TOML: ${(err as Error).message}`);
  }
  validateToml(out);
  return out.endsWith('\n') ? out : `${out}\n`;
}

/**
 * Parses YAML and refuses errors and duplicate keys. The library's own duplicate-key check compares every
 * key with every other (quadratic: 40 000 keys took 6 s of event loop), so it is off and done here with
 * a Set per mapping (scalar keys, compared by type and value as the library does).
 */
function parseYaml(text: string): Document.Parsed {
  const doc = parseDocument(text, { prettyErrors: false, uniqueKeys: false });
  const first = doc.errors[0];
  if (first !== undefined) throw new FormatError(`not valid YAML: ${first.message.split('\n')[0] ?? ''}`);
  const stack: unknown[] = [doc.contents];
  while (stack.length > 0) {
    const node = stack.pop();
    if (isMap(node)) {
      const seen = new Set<string>();
      for (const pair of node.items) {
        if (isScalar(pair.key)) {
          const v: unknown = pair.key.value;
          const id = `${typeof v}:${String(v)}`;
          if (seen.has(id)) throw new FormatError(`not valid YAML: duplicate key ${String(v).slice(0, 64)}`);
          seen.add(id);
        }
        stack.push(pair.value);
      }
    } else if (isSeq(node)) {
      for (const item of node.items) stack.push(item);
    }
  }
  return doc;
}

export function validateYaml(text: string): void {
  parseYaml(text);
}

export function applyYamlOps(text: string, ops: readonly PathOp[]): string {
  const doc = parseYaml(text);
  for (const op of ops) {
    for (const k of op.path)
      if (typeof k === 'string' && FORBIDDEN.has(k))
        throw new FormatError(`path segment ${k} is not allowed`);
    try {
      if (op.op === 'set') {
        doc.setIn(op.path, op.value);
      } else {
        const parent = op.path.length === 1 ? doc.contents : doc.getIn(op.path.slice(0, -1), true);
        if (!(isMap(parent) || isSeq(parent)) || !parent.has(op.path[op.path.length - 1]))
          throw new FormatError(`path ${op.path.join('.')} does not exist`);
        doc.deleteIn(op.path);
      }
    } catch (err) {
      // The yaml library throws plain Errors for paths through scalars.
      if (err instanceof FormatError) throw err;
      throw new FormatError(`path ${op.path.join('.')}: ${(err as Error).message}`);
    }
  }
  const out = doc.toString();
  validateYaml(out);
  return out;
}
