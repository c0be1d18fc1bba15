/**
 * A benchmark load process (a worker script under bench/relay/) driven over IPC: `call({cmd, …})` sends a
 * command with an id and resolves with the worker's `{id, ok, result | error}` reply; a worker that exits
 * rejects every call still waiting. Used by the relay sections (worker.ts) and the tunnel-proxy section
 * (tp-worker.ts).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

interface Reply {
  readonly id: number;
  readonly ok: boolean;
  readonly result?: unknown;
  readonly error?: string;
}

/** Sends SIGTERM, then SIGKILL after `ms`; resolves once the child is gone. */
export function stopChild(child: ChildProcess, ms: number): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const timer = setTimeout(() => child.kill('SIGKILL'), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

export class Peer<Command extends { readonly cmd: string }> {
  readonly #child: ChildProcess;
  #nextId = 1;
  readonly #waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  /** @param script the worker, relative to `root` (e.g. `bench/relay/worker.ts`), run through tsx */
  constructor(
    readonly name: string,
    root: string,
    script: string,
    env: NodeJS.ProcessEnv = process.env,
  ) {
    this.#child = fork(join(root, script), [], { cwd: root, execArgv: ['--import', 'tsx'], env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.#child.on('message', (reply: Reply) => {
      const w = this.#waiting.get(reply.id);
      if (w === undefined) return;
      this.#waiting.delete(reply.id);
      if (reply.ok) w.resolve(reply.result);
      else w.reject(new Error(`${this.name}: ${reply.error ?? 'failed'}`));
    });
    this.#child.on('exit', (code) => {
      for (const w of this.#waiting.values()) w.reject(new Error(`${this.name} exited (${code})`));
      this.#waiting.clear();
    });
  }

  call<T = undefined>(command: Command, timeoutMs = 120_000): Promise<T> {
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(id);
        reject(new Error(`${this.name}: ${command.cmd} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiting.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.#child.send({ ...command, id });
    });
  }

  /** Asks the worker to exit, then makes sure it has. */
  async exit(): Promise<void> {
    try {
      await this.call({ cmd: 'exit' } as Command, 5000);
    } catch {
      /* already gone */
    }
    await stopChild(this.#child, 5000);
  }
}
