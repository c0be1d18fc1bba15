/**
 * Reading a request body within `limits.maxBodyBytes` and `timeouts.bodyMs`. Past either limit the
 * answer (413 / 408, connection closed) is written here and the rest of the body is discarded.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ErrorCode } from '../core/errors.ts';
import { sendPlain } from './respond.ts';

export interface BodyLimits {
  readonly maxBodyBytes: number;
  readonly bodyMs: number;
}

/**
 * Resolves with the body as latin1 text (a compact JWE is ASCII), or undefined once it has answered
 * (413 `SEALED_LIMIT_BODY`, 408 `SEALED_BODY_TIMEOUT`) or the client went away. Never rejects.
 */
export function readBody(
  req: IncomingMessage,
  res: ServerResponse,
  requestId: string,
  limits: BodyLimits,
): Promise<string | undefined> {
  return new Promise((done) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let finished = false;
    const finish = (value: string | undefined, code?: ErrorCode) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      if (code !== undefined) {
        sendPlain(res, code, requestId, { connection: 'close' });
        res.once('finish', () => req.socket.destroySoon());
        req.removeAllListeners('data');
        req.resume();
      }
      done(value);
    };
    const timer = setTimeout(() => finish(undefined, 'SEALED_BODY_TIMEOUT'), limits.bodyMs);
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limits.maxBodyBytes) {
        finish(undefined, 'SEALED_LIMIT_BODY');
        return;
      }
      chunks.push(chunk);
    });
    req.once('end', () => finish(Buffer.concat(chunks).toString('latin1')));
    req.once('error', () => finish(undefined));
    req.once('aborted', () => finish(undefined));
  });
}
