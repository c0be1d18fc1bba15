/**
 * foxyproxy's own HTTP API, with the authentication it never had (`Authorization: Bearer` or
 * `X-Auth-Token`; 401 without):
 *   POST /api/v1.0/command  `{"data":{"reader":"…","command":{"id":"1","line":"APDU:00A4…"}}}` (or
 *        `"commands":[…]`) → `{"response":[{"id":"1","line":"<result>"}]}`
 *   GET  /api/v1.0/select/<name>[/<limit>] → matching readers move to the front of ENUM / LIST
 *   GET  /api/v1.0/hello → `{"result":true}`
 * Commands run exactly as line-protocol requests do (same parser, same executor, same locks).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Secret } from '../../core/config/secret.ts';
import type { Logger } from '../../core/log.ts';
import { executeRequest, type ExecuteContext } from '../commands.ts';
import { parseCommandFields, parseReaderLine, type RequestItem } from '../protocol/lines.ts';
import { readerCandidates } from '../protocol/readers.ts';
import { httpApi, readBody, requestToken, send, tokenMatches, type HttpApi } from './http.ts';

export interface FoxyproxyApiOptions {
  readonly token: Secret;
  readonly log: Logger;
  /** Receives the terminal ids `/select` put first. */
  readonly select: (terminals: readonly string[]) => void;
  readonly maxBodyBytes?: number;
  readonly maxCommands?: number;
  /** Deadline for a whole request (default 120 s). */
  readonly requestTimeoutMs?: number;
  /** Most open connections (default 1000). */
  readonly maxConnections?: number;
  /** Most open connections from one address (default: maxConnections). */
  readonly maxConnectionsPerIp?: number;
  /** Client networks allowed to connect (CIDR; empty or absent: every address). */
  readonly allowFrom?: readonly string[];
}

interface CommandJson {
  readonly id?: unknown;
  readonly line?: unknown;
}

const json = (res: ServerResponse, status: number, body: unknown) => send(res, status, JSON.stringify(body), 'application/json');

export function createFoxyproxyApi(exec: ExecuteContext, opts: FoxyproxyApiOptions): HttpApi {
  const log = opts.log.child({ api: 'foxyproxy' });
  const maxCommands = opts.maxCommands ?? 64;

  async function handle(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    if (!url.pathname.startsWith('/api/v1.0/')) return json(res, 404, { result: false, error: 'not found' });
    if (!tokenMatches(opts.token, requestToken(req))) {
      log.warn({ code: 'CARD_UNAUTHORIZED', remote: req.socket.remoteAddress }, 'request without a valid token');
      return json(res, 401, { result: false, error: 'unauthorized' });
    }
    if (req.method === 'GET' && url.pathname === '/api/v1.0/hello') return json(res, 200, { result: true });
    if (req.method === 'GET' && url.pathname.startsWith('/api/v1.0/select/')) {
      let parts: string[];
      try {
        parts = url.pathname.slice('/api/v1.0/select/'.length).split('/').map(decodeURIComponent);
      } catch {
        return json(res, 400, { result: false, error: 'bad percent-encoding in the path' });
      }
      const [name = '', limit] = parts;
      const needle = name.toLowerCase();
      const candidates = readerCandidates(name);
      let hits = exec.cards
        .readers()
        .filter((r) => candidates.includes(r.terminal) || r.terminal.toLowerCase().includes(needle) || r.display.toLowerCase().includes(needle));
      const n = limit !== undefined && /^\d+$/.test(limit) ? Number(limit) : 0;
      if (n > 0) hits = hits.slice(0, n);
      opts.select(hits.map((r) => r.terminal));
      return json(res, 200, { result: true, selected: hits.map((r) => r.display) });
    }
    if (req.method === 'POST' && url.pathname === '/api/v1.0/command') {
      const body = await readBody(req, opts.maxBodyBytes ?? 1048576);
      if (!body.ok) {
        // A client that went away gets nothing (its socket is gone); an oversized body 413, then close.
        if (body.reason === 'gone') return;
        res.setHeader('Connection', 'close');
        return json(res, 413, { result: false, error: 'body too large' });
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(body.body.toString('utf8'));
      } catch {
        return json(res, 400, { result: false, error: 'invalid JSON' });
      }
      const data = (parsed as { data?: { reader?: unknown; command?: CommandJson; commands?: CommandJson[] } } | null)?.data;
      const list = data?.commands ?? (data?.command === undefined ? [] : [data.command]);
      const isCommand = (c: unknown): c is CommandJson => typeof c === 'object' && c !== null && !Array.isArray(c);
      if (typeof data?.reader !== 'string' || !Array.isArray(list) || list.length === 0 || list.length > maxCommands || !list.every(isCommand)) {
        return json(res, 400, { result: false, error: `need data.reader (string) and 1..${maxCommands} commands` });
      }
      const str = (v: unknown): string => (typeof v === 'string' || typeof v === 'number' ? String(v) : '');
      // The id is echoed exactly as given (it may contain `:`); only `line` is split into fields.
      const items: RequestItem[] = list.map((c) => parseCommandFields(str(c.id), str(c.line)));
      // A client that goes away (closes before its answer) stops the request at its next command.
      const gone = new AbortController();
      res.on('close', () => {
        if (!res.writableFinished) gone.abort();
      });
      const answers = await executeRequest({ reader: parseReaderLine(data.reader), items }, { ...exec, signal: gone.signal });
      return json(res, 200, { response: answers.map((a) => ({ id: a.id, line: a.result })) });
    }
    return json(res, 404, { result: false, error: 'not found' });
  }

  return httpApi('card bridge foxyproxy API', handle, {
    requestTimeoutMs: opts.requestTimeoutMs ?? 120000,
    maxConnections: opts.maxConnections ?? 1000,
    ...(opts.maxConnectionsPerIp === undefined ? {} : { maxConnectionsPerIp: opts.maxConnectionsPerIp }),
    ...(opts.allowFrom === undefined ? {} : { allowFrom: opts.allowFrom }),
    log,
  });
}
