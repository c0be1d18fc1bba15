/**
 * Answer framing of the line protocol (pure): one `>ID:RESULT` line per command, then `@@` on its own line
 * (or, in foxyproxy 1.x compatibility mode, `@@` after every answer line). A request with no answers still
 * gets its `@@`, so a client waiting for it never hangs.
 */

export interface AnswerLine {
  readonly id: string;
  readonly result: string;
}

export const END_MARK = '@@';

export function formatAnswers(answers: readonly AnswerLine[], atAfterEveryAnswer: boolean): string {
  if (answers.length === 0) return `${END_MARK}\n`;
  if (atAfterEveryAnswer) return answers.map((a) => `>${a.id}:${a.result}\n${END_MARK}\n`).join('');
  return `${answers.map((a) => `>${a.id}:${a.result}\n`).join('')}${END_MARK}\n`;
}
