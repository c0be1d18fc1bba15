/**
 * Line-preserving text model shared by the WireGuard and INI formats: the file is a list of lines, each
 * with its own terminator (`\n`, `\r\n` or none for a last line without one), so serialising an
 * unedited file gives back the same bytes. Edits replace, insert or delete whole lines.
 */

export interface Line {
  text: string;
  eol: string;
}

/** Why a file or an edit was refused (→ 422); `line` is 1-based when known. */
export class FormatError extends Error {
  constructor(
    message: string,
    readonly line?: number,
  ) {
    super(line === undefined ? message : `line ${line}: ${message}`);
    this.name = 'FormatError';
  }
}

export function splitLines(text: string): Line[] {
  const lines: Line[] = [];
  let i = 0;
  while (i < text.length) {
    const j = text.indexOf('\n', i);
    if (j < 0) {
      lines.push({ text: text.slice(i), eol: '' });
      break;
    }
    let t = text.slice(i, j);
    let eol = '\n';
    if (t.endsWith('\r')) {
      t = t.slice(0, -1);
      eol = '\r\n';
    }
    lines.push({ text: t, eol });
    i = j + 1;
  }
  return lines;
}

export function joinLines(lines: readonly Line[]): string {
  let out = '';
  for (const l of lines) out += l.text + l.eol;
  return out;
}

/** The file's line terminator for new lines: the first one used, else `\n`. */
export function dominantEol(lines: readonly Line[]): string {
  for (const l of lines) if (l.eol !== '') return l.eol;
  return '\n';
}

/** Makes sure the last line is terminated before lines are appended after it. */
export function terminateLast(lines: Line[], eol: string): void {
  const last = lines[lines.length - 1];
  if (last !== undefined && last.eol === '') last.eol = eol;
}
