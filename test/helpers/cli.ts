/** Spawns the real `gatehouse` CLI (bin/gatehouse.js) and collects its output. */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { deadline } from './relay.ts';

export const BIN = fileURLToPath(new URL('../../bin/gatehouse.js', import.meta.url));

export interface Spawned {
  readonly child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves when stdout contains `needle`. */
  waitForStdout(needle: string | RegExp, ms?: number): Promise<string>;
  exited(ms?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * `command`: run this executable instead of `node bin/gatehouse.js` (BIN itself, through its #! line and
 * its node flags, or `gatehouse` as an installed package puts it on PATH).
 */
export function gatehouse(args: string[], opts: { cwd?: string; input?: string; env?: Record<string, string>; command?: string; exactEnv?: NodeJS.ProcessEnv } = {}): Spawned {
  const [file, argv] = opts.command === undefined ? [process.execPath, [BIN, ...args]] : [opts.command, args];
  const child = spawn(file, argv, {
    cwd: opts.cwd ?? process.cwd(),
    stdio: ['pipe', 'pipe', 'pipe'],
    // `exactEnv`: this environment and nothing else (an installed package's test strips npm's variables).
    env: opts.exactEnv ?? { ...process.env, ...opts.env },
  });
  let out = '';
  let err = '';
  const waiters = new Set<() => void>();
  child.stdout.setEncoding('utf8').on('data', (t: string) => {
    out += t;
    for (const w of waiters) w();
  });
  child.stderr.setEncoding('utf8').on('data', (t: string) => (err += t));
  if (opts.input !== undefined) child.stdin.end(opts.input);
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  /** Its output is all in (stdout and stderr closed, after the exit). */
  const closed = new Promise<void>((resolve) => child.on('close', () => resolve()));
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    waitForStdout(needle, ms = 15000) {
      return deadline(new Promise<string>((resolve, reject) => {
        const check = () => {
          if (typeof needle === 'string' ? out.includes(needle) : needle.test(out)) {
            waiters.delete(check);
            resolve(out);
          }
        };
        waiters.add(check);
        check();
        // A process whose output ended first never prints it: say so at once, with what it printed.
        closed.then(() => {
          waiters.delete(check);
          reject(new Error(`exited before stdout ${String(needle)}:\n${out.slice(-500)}\n${err.slice(-1500)}`));
        }, reject);
      }), ms, `stdout ${String(needle)} (stdout: ${out.slice(-300)} stderr: ${err.slice(-500)})`);
    },
    exited: (ms = 15000) => deadline(exit, ms, 'process exit'),
  };
}

/** Runs the CLI to its end (stdin closed unless `input`); resolves with the exit code and both outputs. */
export async function runGatehouse(
  args: string[],
  opts: { cwd?: string; input?: string; env?: Record<string, string>; ms?: number } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = gatehouse(args, { ...opts, input: opts.input ?? '' });
  const { code } = await p.exited(opts.ms ?? 20000);
  return { code, stdout: p.stdout(), stderr: p.stderr() };
}

/** A user mistake is one message, never a crash: no stack frame lines, no "unexpected", no JSON fatal line. */
export function assertNoCrash(stderr: string): void {
  if (/^\s+at /m.test(stderr) || /unexpected/i.test(stderr) || /"level":"fatal"/.test(stderr)) {
    throw new Error(`stderr looks like a crash:\n${stderr}`);
  }
}
