/**
 * Gateway PROCESSES for the cluster fault tests: each node is a real `gatehouse serve --config FILE`
 * child (JSON log lines on stderr), so a test can SIGKILL it by PID like a machine that dies. Parses the
 * banner for the listener URLs and the ops URL, and reads the JSON log records. Also: which process holds
 * the server side of a client's TCP connection (/proc/net/tcp + /proc/PID/fd), to tell on which worker
 * of `serve --workers` a client landed. Linux only (as the test machines and CI).
 */
import { readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gatehouse, type Spawned } from '../helpers/cli.ts';
import { deadline, type RawClient } from '../helpers/relay.ts';

export interface GatewayNode {
  readonly name: string;
  readonly proc: Spawned;
  readonly pid: number;
  /** Listener URL by kind (`tcp`, `tls`, `ws`, `wss`). */
  url(kind: string): string;
  /** `http://127.0.0.1:PORT` of the ops listener, when `[ops]` is on. */
  readonly opsUrl: string | undefined;
  /** Every JSON log record the process wrote to stderr so far (non-JSON lines skipped). */
  records(): Record<string, unknown>[];
  /** Resolves once a record satisfies `pred` (at least `count` of them). */
  waitForRecord(pred: (r: Record<string, unknown>) => boolean, ms?: number, count?: number): Promise<Record<string, unknown>>;
  /** SIGKILL (a crash: nothing is drained, nothing is released) and wait for the exit. */
  crash(): Promise<void>;
  /** SIGTERM if still running (a `--workers` primary stops its workers and removes its socket dir), SIGKILL after 5 s. */
  stop(): Promise<void>;
}

export function parseRecords(stderr: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of stderr.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // A line being written right now: the next read has it whole.
    }
  }
  return out;
}

/** Polls `fn` every 20 ms until it returns a value other than undefined, within `ms`. */
export async function until<T>(fn: () => T | undefined | Promise<T | undefined>, ms: number, what: string): Promise<T> {
  return deadline(
    (async () => {
      for (;;) {
        const v = await fn();
        if (v !== undefined) return v;
        await new Promise((r) => setTimeout(r, 20));
      }
    })(),
    ms,
    what,
  );
}

/**
 * Writes `toml` to `dir/name.toml` and starts `gatehouse serve` on it (plus `extraArgs`); resolves once
 * the banner is printed (every listener bound).
 */
export async function startNode(name: string, dir: string, toml: string, extraArgs: string[] = [], bannerMs = 15000): Promise<GatewayNode> {
  const cfg = join(dir, `${name}.toml`);
  writeFileSync(cfg, toml);
  const proc = gatehouse(['serve', '--config', cfg, '--log-format', 'json', ...extraArgs]);
  let banner: string;
  try {
    banner = await proc.waitForStdout(/Press Ctrl-C/, bannerMs);
  } catch (err) {
    proc.child.kill('SIGKILL');
    throw err;
  }
  const urls = new Map<string, string>();
  for (const m of banner.matchAll(/^ {2}(tcp|tls|ws|wss) +(\S+)$/gm)) if (!urls.has(m[1]!)) urls.set(m[1]!, m[2]!);
  const ops = /^Ops: (http:\/\/\S+)\/metrics/m.exec(banner)?.[1];
  const records = () => parseRecords(proc.stderr());
  const exited = () => proc.child.exitCode !== null || proc.child.signalCode !== null;
  return {
    name,
    proc,
    pid: proc.child.pid ?? -1,
    opsUrl: ops,
    url(kind) {
      const u = urls.get(kind);
      if (u === undefined) throw new Error(`${name} has no ${kind} listener (banner: ${banner})`);
      return u;
    },
    records,
    waitForRecord: (pred, ms = 5000, count = 1) =>
      until(() => records().filter(pred)[count - 1], ms, `a log record of ${name} (stderr tail: ${proc.stderr().slice(-800)})`),
    async crash() {
      if (exited()) return;
      proc.child.kill('SIGKILL');
      await proc.exited(5000);
    },
    async stop() {
      if (exited()) return;
      proc.child.kill('SIGTERM');
      try {
        await proc.exited(5000);
      } catch {
        proc.child.kill('SIGKILL');
        await proc.exited(5000).catch(() => undefined);
      }
    },
  };
}

/** The client's own TCP port (for tcp, tls, ws and wss clients). */
export function localPort(c: RawClient): number {
  const s = c.socket ?? (c.ws as unknown as { _socket?: { localPort?: number } } | undefined)?._socket;
  const port = s?.localPort;
  if (port === undefined) throw new Error('client has no local port');
  return port;
}

/** The socket inode of the server side of a loopback connection whose client port is `clientPort`. */
function serverInode(clientPort: number, serverPort: number): string | undefined {
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      const local = f[1];
      const remote = f[2];
      if (local === undefined || remote === undefined) continue;
      const lp = parseInt(local.slice(local.lastIndexOf(':') + 1), 16);
      const rp = parseInt(remote.slice(remote.lastIndexOf(':') + 1), 16);
      if (lp === serverPort && rp === clientPort && f[9] !== undefined && f[9] !== '0') return f[9];
    }
  }
  return undefined;
}

/** Which of `pids` holds the server side of `client`'s connection to `serverUrl` (undefined: none of them). */
export function ownerPid(client: RawClient, serverUrl: string, pids: readonly number[]): number | undefined {
  const inode = serverInode(localPort(client), Number(new URL(serverUrl).port));
  if (inode === undefined) return undefined;
  const want = `socket:[${inode}]`;
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        if (readlinkSync(`/proc/${pid}/fd/${fd}`) === want) return pid;
      } catch {
        // Closed while we looked.
      }
    }
  }
  return undefined;
}
