/**
 * Answer framing of the line protocol (pure): one `>ID:RESULT` line per command, then `@@` on its own line
 * (or, in foxyproxy 1.x compatibility mode, `@@` after every answer line). A request with no answers still
 * gets its `@@`, so a client waiting for it never hangs.
 *
 * Ids come from the decoder as latin1 strings of their wire bytes and results are ASCII, so the answer is
 * encoded as latin1: every id goes back byte for byte as the client sent it, whatever its encoding.
 */

export interface AnswerLine {
  /** The id as the decoder gives it: one character per byte on the wire. */
  readonly id: string;
  /** ASCII: hex, base64, `C0xx`, `OK`. */
  readonly result: string;
}

export const END_MARK = '@@';

/** The bytes to write for one request's answers. */
export function formatAnswers(answers: readonly AnswerLine[], atAfterEveryAnswer: boolean): Buffer {
  let text: string;
  if (answers.length === 0) text = `${END_MARK}\n`;
  else if (atAfterEveryAnswer) text = answers.map((a) => `>${a.id}:${a.result}\n${END_MARK}\n`).join('');
  else text = `${answers.map((a) => `>${a.id}:${a.result}\n`).join('')}${END_MARK}\n`;
  return Buffer.from(text, 'latin1');
}
