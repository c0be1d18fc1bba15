/** Renders the error catalogue as docs/errors.md (kept in sync by a test). */
import { ERROR_CATALOGUE, type ErrorSpec } from './errors.ts';

function cell(s: string): string {
  return s.replace(/\|/g, '\\|');
}

export function renderErrorsDoc(): string {
  const out = [
    '# Error codes',
    '',
    'Generated from `src/core/errors.ts` by `npm run docs:errors`; a test fails when this file is stale.',
    'Each code is stable. Columns give the wire forms a code can take: HTTP status, JSON-RPC `error` text',
    '(relay), WebSocket close code and reason (the reason is also the relay\'s close reason on TCP/TLS/unix,',
    'where the close itself is a FIN), and the line-protocol result (card bridge).',
    '',
  ];
  const groups = new Map<string, [string, ErrorSpec][]>();
  for (const [code, spec] of Object.entries(ERROR_CATALOGUE) as [string, ErrorSpec][]) {
    const prefix = code.split('_')[0]!;
    const list = groups.get(prefix) ?? [];
    list.push([code, spec]);
    groups.set(prefix, list);
  }
  const titles: Record<string, string> = { CORE: 'Core', RELAY: 'Relay', CARD: 'Card bridge', SEALED: 'Sealed API' };
  for (const [prefix, list] of groups) {
    out.push(`## ${titles[prefix] ?? prefix}`, '', '| code | meaning | HTTP | JSON-RPC text | close | line |', '|---|---|---|---|---|---|');
    for (const [code, s] of list) {
      const close = s.close === undefined ? '' : `${s.close.code} \`${s.close.reason}\``;
      const rpc = s.jsonRpcText === undefined ? '' : `\`${s.jsonRpcText}\``;
      out.push(`| \`${code}\` | ${cell(s.summary)} | ${s.httpStatus} | ${cell(rpc)} | ${cell(close)} | ${s.lineResult ?? ''} |`);
    }
    out.push('');
  }
  return out.join('\n');
}
