/**
 * A line-protocol client (for `gatehouse card` and the benchmark): one persistent TCP or TLS connection,
 * one request at a time, answers parsed into `{id, result}`. Bounded: an answer over `maxAnswerBytes` or
 * slower than `timeoutMs` fails the request and closes the connection.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { END_MARK } from './protocol/answers.ts';

export interface CardClientOptions {
  readonly host: string;
  readonly port: number;
  readonly tls?: boolean;
  /** Accept any server certificate (self-signed development setups). */
  readonly insecure?: boolean;
  readonly timeoutMs?: number;
  readonly maxAnswerBytes?: number;
}

export interface ClientAnswer {
  readonly id: string;
  readonly result: string;
}

export class CardClient {
  #buf = '';
  #waiting: { resolve: (a: ClientAnswer[]) => void; reject: (e: Error) => void; timer: NodeJS.Timeout } | undefined;
  #error: Error | undefined;

  private constructor(
    readonly socket: Socket,
    private readonly opts: CardClientOptions,
  ) {
    socket.setNoDelay(true);
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => this.#onData(text));
    socket.on('error', (err) => this.#fail(err));
    socket.on('close', () => this.#fail(new Error('connection closed by the bridge')));
  }

  /** Connects (and, with `tls`, handshakes) within `timeoutMs` (30000); a bridge that accepts and says nothing fails it. */
  static connect(opts: CardClientOptions): Promise<CardClient> {
    const timeoutMs = opts.timeoutMs ?? 30000;
    return new Promise((resolve, reject) => {
      const socket = opts.tls === true ? tlsConnect({ host: opts.host, port: opts.port, rejectUnauthorized: opts.insecure !== true }) : netConnect({ host: opts.host, port: opts.port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`no connection within ${timeoutMs} ms`));
      }, timeoutMs);
      const failed = (err: Error) => {
        clearTimeout(timer);
        reject(err);
      };
      socket.once(opts.tls === true ? 'secureConnect' : 'connect', () => {
        clearTimeout(timer);
        socket.off('error', failed);
        resolve(new CardClient(socket, opts));
      });
      socket.once('error', failed);
    });
  }

  /** Sends `>reader` and the command lines (`ID:COMMAND[:DATA]`), resolves with the answers. */
  request(reader: string, commands: readonly string[]): Promise<ClientAnswer[]> {
    if (this.#error !== undefined) return Promise.reject(this.#error);
    if (this.#waiting !== undefined) return Promise.reject(new Error('one request at a time'));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.#fail(new Error(`no answer within ${this.opts.timeoutMs ?? 30000} ms`)), this.opts.timeoutMs ?? 30000);
      this.#waiting = { resolve, reject, timer };
      this.socket.write(`>${reader}|\n${commands.map((c) => `>${c}|\n`).join('')}\n`);
    });
  }

  close(): void {
    this.socket.end();
    this.socket.destroy();
  }

  #onData(text: string): void {
    this.#buf += text;
    if (this.#buf.length > (this.opts.maxAnswerBytes ?? 4 * 1024 * 1024)) {
      this.#fail(new Error('answer too large'));
      return;
    }
    const end = this.#buf.indexOf(`${END_MARK}\n`);
    if (end < 0 || this.#waiting === undefined) return;
    const body = this.#buf.slice(0, end);
    this.#buf = this.#buf.slice(end + END_MARK.length + 1);
    const answers = body
      .split('\n')
      .filter((l) => l.startsWith('>'))
      .map((l) => {
        const colon = l.indexOf(':');
        return colon < 0 ? { id: '', result: l.slice(1) } : { id: l.slice(1, colon), result: l.slice(colon + 1) };
      });
    const w = this.#waiting;
    this.#waiting = undefined;
    clearTimeout(w.timer);
    w.resolve(answers);
  }

  #fail(err: Error): void {
    this.#error ??= err;
    const w = this.#waiting;
    this.#waiting = undefined;
    if (w !== undefined) {
      clearTimeout(w.timer);
      w.reject(err);
    }
    this.socket.destroy();
  }
}
