/**
 * INI files, line-preserving: `[section]` headers, `key = value` (or `key: value`) lines, full-line
 * comments starting with `;` or `#`. Values are not cut at inline `;`/`#` (many dialects keep them), so
 * files round-trip byte for byte. Keys before the first header belong to the section "" (global).
 * Operations address the first section of a name; keys compare case-sensitively.
 */
import { z } from 'zod';
import { FormatError, dominantEol, joinLines, splitLines, terminateLast, type Line } from './lines.ts';

interface IniLine {
  readonly kind: 'blank' | 'comment' | 'section' | 'kv';
  readonly name?: string;
  readonly key?: string;
}

function parse(text: string): IniLine {
  const t = text.trim();
  if (t === '') return { kind: 'blank' };
  if (t.startsWith(';') || t.startsWith('#')) return { kind: 'comment' };
  if (t.startsWith('[')) {
    if (!t.endsWith(']')) return { kind: 'kv', key: '' };
    return { kind: 'section', name: t.slice(1, -1).trim() };
  }
  // Index arithmetic, not a regex: /^([^=:]+?)\s*[=:]/ backtracks quadratically on a long line of spaces.
  const sep = separatorIndex(t);
  return { kind: 'kv', key: sep <= 0 ? '' : t.slice(0, sep).trim() };
}

/** Index of the first `=` or `:` in `text`, or -1. */
function separatorIndex(text: string): number {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x3d || c === 0x3a) return i;
  }
  return -1;
}

class IniFile {
  lines: Line[];
  parsed: IniLine[] = [];
  constructor(text: string) {
    this.lines = splitLines(text);
    this.reindex();
  }
  reindex(): void {
    this.parsed = this.lines.map((l) => parse(l.text));
  }
  /** [headerIndex or -1 for global, end) of the first section named `name`. */
  section(name: string): { header: number; end: number } | undefined {
    let header = name === '' ? -1 : undefined;
    if (header === undefined) {
      const i = this.parsed.findIndex((p) => p.kind === 'section' && p.name === name);
      if (i < 0) return undefined;
      header = i;
    }
    let end = header + 1;
    while (end < this.lines.length && this.parsed[end]!.kind !== 'section') end++;
    return { header, end };
  }
}

/** @throws FormatError for a line that is neither a section, a key/value pair nor a comment. */
export function validateIni(text: string): void {
  new IniFile(text).parsed.forEach((p, i) => {
    if (p.kind === 'kv' && p.key === '')
      throw new FormatError('line is neither [section], key = value nor a comment', i + 1);
  });
}

export const iniOpSchema = z.discriminatedUnion('op', [
  z.strictObject({ op: z.literal('set'), section: z.string(), key: z.string().min(1), value: z.string() }),
  z.strictObject({ op: z.literal('delete'), section: z.string(), key: z.string().min(1).optional() }),
]);
export type IniOp = z.output<typeof iniOpSchema>;

const safe = (s: string, what: string) => {
  if (/[\r\n]/.test(s) || (what !== 'value' && /[[\]=:]/.test(s)))
    throw new FormatError(`${what} ${JSON.stringify(s)} has characters INI cannot hold`);
  // Names are read back trimmed: one with outer spaces would never be found again (a new line per set).
  if (what !== 'value' && s !== s.trim())
    throw new FormatError(`${what} ${JSON.stringify(s)} has leading or trailing whitespace`);
  return s;
};

export function applyIniOps(text: string, ops: readonly IniOp[]): string {
  validateIni(text);
  const f = new IniFile(text);
  const eol = dominantEol(f.lines);
  for (const op of ops) {
    let s = f.section(op.section);
    if (op.op === 'delete') {
      if (s === undefined) throw new FormatError(`no section [${op.section}]`);
      if (op.key === undefined) {
        if (s.header < 0) throw new FormatError('the global section cannot be deleted; delete its keys');
        f.lines.splice(s.header, s.end - s.header);
      } else {
        const i = f.parsed.findIndex(
          (p, n) => n > s!.header && n < s!.end && p.kind === 'kv' && p.key === op.key,
        );
        if (i < 0) throw new FormatError(`no key ${op.key} in [${op.section}]`);
        f.lines.splice(i, 1);
      }
      f.reindex();
      continue;
    }
    safe(op.key, 'key');
    safe(op.value, 'value');
    if (s === undefined) {
      safe(op.section, 'section');
      terminateLast(f.lines, eol);
      if (f.lines.length > 0 && f.parsed[f.parsed.length - 1]!.kind !== 'blank')
        f.lines.push({ text: '', eol });
      f.lines.push({ text: `[${op.section}]`, eol });
      f.reindex();
      s = f.section(op.section);
      if (s === undefined) throw new FormatError(`section [${op.section}] cannot be added`);
    }
    const found = s;
    const i = f.parsed.findIndex(
      (p, n) => n > found.header && n < found.end && p.kind === 'kv' && p.key === op.key,
    );
    if (i >= 0) {
      const old = f.lines[i]!.text;
      const prefix = old.slice(0, separatorIndex(old) + 1);
      f.lines[i]!.text = `${prefix}${/[=:]\s/.test(old) ? ' ' : ''}${op.value}`;
    } else {
      let last = found.header;
      for (let n = found.header + 1; n < found.end; n++) if (f.parsed[n]!.kind === 'kv') last = n;
      if (last === f.lines.length - 1) terminateLast(f.lines, eol);
      f.lines.splice(last + 1, 0, { text: `${op.key} = ${op.value}`, eol });
    }
    f.reindex();
    // What was written must read back as that key (a key starting with ; or # makes a comment line:
    // the set would report success, and every later set would add another such line).
    const back = f.section(op.section);
    if (
      back === undefined ||
      !f.parsed.some((p, n) => n > back.header && n < back.end && p.kind === 'kv' && p.key === op.key)
    )
      throw new FormatError(
        `key ${JSON.stringify(op.key)} would not be read back as a key (; or # first makes a comment)`,
      );
  }
  const out = joinLines(f.lines);
  validateIni(out);
  return out;
}
