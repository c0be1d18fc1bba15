/**
 * `gatehouse monitor`: shows the relay's monitor socket live in the terminal (clients, tunnels,
 * throughput), or prints one compact JSON document with `--json` (scripts). Under `serve --workers` the
 * socket is the primary's and shows every worker.
 * `gatehouse monitor --cluster` reads `[cluster]` from the config instead and shows every live node in
 * Redis (relay/cluster/presence.ts) with its tunnels, live or once with `--json`.
 * The live view uses the terminal's alternate screen and fits its width and height; `q` quits. Tunnel rows
 * name both clients (and their users) with bytes and rate; the header shows the Gatehouse version (this installation's). When
 * the gateway stops, the view says so and reconnects by itself once it is back.
 */
import { Command } from 'commander';
import { connect, type Socket } from 'node:net';
import { resolve } from 'node:path';
import { defaultConfig, loadGatewayConfig } from '../config.ts';
import { dirname } from 'node:path';
import { EXIT } from './exit.ts';
import { gatehouseVersion } from '../core/version.ts';
import { silentLogger } from '../core/log.ts';
import type { ClusterView, NodePresence } from '../relay/cluster/presence.ts';

/** Parses one monitor line; a socket that is not the monitor gets a message and exit 69, not a stack. */
/**
 * Splits what the monitor socket sends into whole documents. The relay answers `refresh` with one compact
 * line, but a client that connects just before the relay's push tick first gets a pushed document in Qt's
 * indented form (a `{` line, indented lines, a `}` line, a blank line), as nymea 1.8 monitors expect:
 * both forms are read, so that race never looks like a foreign socket.
 */
export class MonitorDocReader {
  #buffer = '';
  #block: string[] | undefined;

  /** Appends text; returns each complete document's text (compact line or indented block), in order. */
  push(text: string): string[] {
    this.#buffer += text;
    const docs: string[] = [];
    let nl: number;
    while ((nl = this.#buffer.indexOf('\n')) >= 0) {
      const line = this.#buffer.slice(0, nl);
      this.#buffer = this.#buffer.slice(nl + 1);
      if (this.#block !== undefined) {
        this.#block.push(line);
        if (line === '}') {
          docs.push(this.#block.join('\n'));
          this.#block = undefined;
        }
      } else if (line === '{') this.#block = [line];
      else if (line.trim() !== '') docs.push(line);
    }
    return docs;
  }

  /** Characters held for an unfinished document (bounded by the caller). */
  get pendingChars(): number {
    return this.#buffer.length + (this.#block?.reduce((n, l) => n + l.length + 1, 0) ?? 0);
  }
}

function parseDoc(line: string, path: string): MonitorDoc {
  try {
    const doc = JSON.parse(line) as unknown;
    if (doc !== null && typeof doc === 'object' && !Array.isArray(doc)) return doc;
  } catch {
    // fall through
  }
  process.stderr.write(`gatehouse monitor: ${path} is not a Gatehouse monitor socket (it sent something that is not JSON)\n`);
  process.exit(EXIT.unavailable);
}

interface MonitorClient {
  id: string;
  address: string;
  name: string;
  uuid: string;
  userName: string;
  authenticated: boolean;
  tunnelConnected: boolean;
  rxDataCount: number;
  txDataCount: number;
  timestamp: number;
}

interface MonitorDoc {
  serverName?: string;
  serverVersion?: string;
  proxyStatistic?: {
    clientCount?: number;
    tunnelCount?: number;
    troughput?: number;
    clients?: MonitorClient[];
    tunnels?: { clientOne: string; clientTwo: string; timestamp: number }[];
    total?: { totalClientCount?: number; totalTunnelCount?: number; totalTraffic?: number };
  };
}

/** Human-readable byte counts: 1.5 MiB. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

/** What the previous document said, for per-tunnel rates. */
export interface MonitorHistory {
  readonly atMs: number;
  /** Bytes per tunnel (key: both connection ids). */
  readonly tunnelBytes: ReadonlyMap<string, number>;
}

export interface RenderOptions {
  /** Terminal width and height; lines are cut to the width and rows past the height are summarised. */
  readonly columns?: number;
  readonly rows?: number;
  readonly previous?: MonitorHistory;
  /** The Gatehouse version shown (default: this installation's package.json). */
  readonly version?: string;
}

/** Cuts `raw` to `width` characters, marking the cut; control characters shown as `?`. */
function fit(raw: string, width: number): string {
  // Names are client-chosen and presence values come from other nodes: no control character (ESC
  // sequences, CR, BEL, C1) reaches the terminal.
  // eslint-disable-next-line no-control-regex
  const text = raw.replace(/[\x00-\x1f\x7f-\x9f]/g, '?');
  return text.length <= width ? text : `${text.slice(0, Math.max(0, width - 1))}…`;
}

const col = (text: string, width: number) => fit(text, width - 1).padEnd(width);

/**
 * Renders one monitor document as the terminal view (fits `columns` × `rows`), and the history the next
 * render needs for rates.
 */
export function renderMonitorView(doc: MonitorDoc, nowMs = Date.now(), opts: RenderOptions = {}): { text: string; history: MonitorHistory } {
  const p = doc.proxyStatistic ?? {};
  const width = Math.max(40, opts.columns ?? 120);
  const height = Math.max(8, opts.rows ?? 1000);
  const clients = p.clients ?? [];
  const byId = new Map(clients.map((c) => [c.id, c]));
  const version = `Gatehouse ${opts.version ?? gatehouseVersion()}   `;
  const head = [
    `${version}clients ${p.clientCount ?? 0}   tunnels ${p.tunnelCount ?? 0}   throughput ${formatBytes(p.troughput ?? 0)}/s   total ${formatBytes(p.total?.totalTraffic ?? 0)} in ${p.total?.totalTunnelCount ?? 0} tunnels   (q quits)`,
    '',
  ];
  const rows: string[] = [];
  const tunnelBytes = new Map<string, number>();
  const tunnels = p.tunnels ?? [];
  if (tunnels.length > 0) {
    rows.push(`TUNNELS  ${col('ONE', 22)}${col('TWO', 22)}${col('BYTES', 11)}${col('RATE', 12)}UP`);
    const seconds = opts.previous === undefined ? 0 : (nowMs - opts.previous.atMs) / 1000;
    for (const t of tunnels) {
      const one = byId.get(t.clientOne);
      const two = byId.get(t.clientTwo);
      const bytes = (one?.rxDataCount ?? 0) + (two?.rxDataCount ?? 0);
      const key = `${t.clientOne}|${t.clientTwo}`;
      tunnelBytes.set(key, bytes);
      const before = opts.previous?.tunnelBytes.get(key);
      const rate = before === undefined || seconds <= 0 ? '' : `${formatBytes(Math.max(0, bytes - before) / seconds)}/s`;
      const name = (c: MonitorClient | undefined, id: string) => (c === undefined ? id.slice(1, 9) : `${c.name || c.id.slice(1, 9)}${c.userName === '' ? '' : ` (${c.userName})`}`);
      rows.push(`  <->    ${col(name(one, t.clientOne), 22)}${col(name(two, t.clientTwo), 22)}${col(formatBytes(bytes), 11)}${col(rate, 12)}${Math.max(0, Math.round(nowMs / 1000 - t.timestamp))}s`);
    }
    rows.push('');
  }
  rows.push(`${col('ID', 10)}${col('ADDRESS', 24)}${col('NAME', 20)}${col('USER', 14)}${col('STATE', 11)}${col('RX', 11)}${col('TX', 11)}AGE`);
  for (const c of clients) {
    const state = c.tunnelConnected ? 'tunnel' : c.authenticated ? 'waiting' : 'connecting';
    const age = Math.max(0, Math.round(nowMs / 1000 - c.timestamp));
    rows.push(`${col(c.id.slice(1, 9), 10)}${col(c.address, 24)}${col(c.name, 20)}${col(c.userName, 14)}${col(state, 11)}${col(formatBytes(c.rxDataCount), 11)}${col(formatBytes(c.txDataCount), 11)}${age}s`);
  }
  const room = height - head.length;
  const shown = rows.length <= room ? rows : [...rows.slice(0, room - 1), `… ${rows.length - room + 1} more rows (enlarge the terminal, or use --json)`];
  return { text: [...head, ...shown].map((l) => fit(l, width)).join('\n'), history: { atMs: nowMs, tunnelBytes } };
}

/** Renders one monitor document as the terminal view (no size limit, no rates). */
export function renderMonitor(doc: MonitorDoc, nowMs = Date.now()): string {
  return renderMonitorView(doc, nowMs).text;
}

async function socketPath(opts: { socket?: string; config?: string }): Promise<string> {
  if (opts.socket !== undefined) return resolve(opts.socket);
  const config = opts.config === undefined ? defaultConfig() : await loadGatewayConfig(opts.config);
  const base = opts.config === undefined ? process.cwd() : dirname(resolve(opts.config));
  return resolve(base, config.relay.monitor.path);
}

/** Uptime as `3d4h`, `2h5m`, `4m10s` or `12s`. */
function formatAge(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s >= 86400) return `${Math.floor(s / 86400)}d${Math.floor((s % 86400) / 3600)}h`;
  if (s >= 3600) return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m${s % 60}s`;
  return `${s}s`;
}

/**
 * Renders the cluster view (every live node, then every node's tunnels) for a terminal of `columns` ×
 * `rows`; rows past the height are summarised.
 */
export function renderClusterView(view: ClusterView, nowMs = Date.now(), opts: { columns?: number; rows?: number; version?: string } = {}): string {
  const width = Math.max(40, opts.columns ?? 120);
  const height = Math.max(8, opts.rows ?? 1000);
  const relays = view.nodes.map((n) => n.relay).filter((r) => r !== null);
  const sum = (f: (r: NonNullable<NodePresence['relay']>) => number) => relays.reduce((n, r) => n + f(r), 0);
  const head = [
    `Gatehouse ${opts.version ?? gatehouseVersion()} cluster   nodes ${view.nodes.length}   clients ${sum((r) => r.clients)}   waiting ${sum((r) => r.waiting)}   tunnels ${Math.ceil(sum((r) => r.tunnels) - sum((r) => r.forwarded) / 2)}   total ${formatBytes(sum((r) => r.totalTraffic))} in ${sum((r) => r.totalTunnels)} tunnels${view.unreadable > 0 ? `   (${view.unreadable} unreadable)` : ''}   (q quits)`,
    '',
  ];
  const rows: string[] = [`${col('NODE', 26)}${col('VERSION', 9)}${col('UP', 8)}${col('CLIENTS', 8)}${col('WAITING', 8)}${col('TUNNELS', 8)}${col('TCP/TLS/WS/WSS/UNIX', 20)}FORWARD`];
  for (const n of view.nodes) {
    const r = n.relay;
    const c = r?.connections ?? {};
    const per = ['tcp', 'tls', 'ws', 'wss', 'unix'].map((k) => String(Object.hasOwn(c, k) ? (c[k] ?? 0) : 0)).join('/');
    rows.push(`${col(n.node, 26)}${col(n.version, 9)}${col(formatAge((nowMs - n.startedAt) / 1000), 8)}${col(r === null ? '-' : String(r.clients), 8)}${col(r === null ? '-' : String(r.waiting), 8)}${col(r === null ? '-' : String(r.tunnels), 8)}${col(r === null ? 'no relay' : per, 20)}${n.forward ?? ''}`);
  }
  const tunnelRows: string[] = [];
  for (const n of view.nodes) {
    for (const t of n.relay?.tunnelList ?? []) {
      const name = (p: { id: string; name: string; userName: string }) => `${p.name || p.id.slice(1, 9)}${p.userName === '' ? '' : ` (${p.userName})`}`;
      tunnelRows.push(`${col(n.node, 26)}${col(name(t.one), 22)}${col(name(t.two), 22)}${col(formatBytes(t.bytes), 11)}${formatAge(nowMs / 1000 - t.timestamp)}`);
    }
    if ((n.relay?.tunnelsNotListed ?? 0) > 0) tunnelRows.push(`${col(n.node, 26)}… ${n.relay?.tunnelsNotListed ?? 0} more tunnels not published`);
  }
  if (tunnelRows.length > 0) rows.push('', `${col('TUNNELS ON', 26)}${col('ONE', 22)}${col('TWO', 22)}${col('BYTES', 11)}UP`, ...tunnelRows);
  const room = height - head.length;
  const shown = rows.length <= room ? rows : [...rows.slice(0, room - 1), `… ${rows.length - room + 1} more rows (enlarge the terminal, or use --json)`];
  return [...head, ...shown].map((l) => fit(l, width)).join('\n');
}

interface ClusterSource {
  readonly redisUrl: string;
  readonly keyPrefix: string;
  readonly commandTimeoutMs: number;
}

async function clusterSource(opts: { config?: string }): Promise<ClusterSource> {
  const config = opts.config === undefined ? defaultConfig() : await loadGatewayConfig(opts.config);
  const c = config.cluster;
  if (!c.enabled || c.redisUrl === undefined) {
    process.stderr.write(`gatehouse monitor: --cluster reads the nodes from Redis, and ${opts.config ?? 'the embedded defaults'} has no [cluster] redisUrl (give --config FILE). Workers of one machine without Redis: \`gatehouse monitor\` already shows every worker.\n`);
    process.exit(opts.config === undefined ? EXIT.usage : EXIT.config);
  }
  return { redisUrl: c.redisUrl, keyPrefix: c.keyPrefix, commandTimeoutMs: c.redisCommandTimeoutMs };
}

/** A connected Redis client for reading the view, or a message and exit 69. */
async function clusterRedis(src: ClusterSource, persistent: boolean) {
  const { createRedisClient, describeRedisUrl } = await import('../core/redis.ts');
  const redis = createRedisClient({ redisUrl: src.redisUrl, commandTimeoutMs: src.commandTimeoutMs, log: silentLogger(), errorCode: 'RELAY_PRESENCE_FAILED', errorMessage: 'redis unreachable' });
  try {
    await redis.connect();
  } catch (err) {
    if (!persistent) {
      redis.disconnect();
      process.stderr.write(`gatehouse monitor: cannot reach redis at ${describeRedisUrl(src.redisUrl)}: ${(err as Error).message.replace(/\/\/[^@/]*@/g, '//***@')}\n`);
      process.exit(EXIT.unavailable);
    }
  }
  return { redis, where: describeRedisUrl(src.redisUrl) };
}

/** `monitor --cluster --json`: one JSON document `{nodes, unreadable}`. */
async function clusterOnce(src: ClusterSource): Promise<void> {
  const { readClusterView } = await import('../relay/cluster/presence.ts');
  const { redis, where } = await clusterRedis(src, false);
  let view: ClusterView;
  try {
    view = await readClusterView(redis, src.keyPrefix);
  } catch (err) {
    redis.disconnect();
    process.stderr.write(`gatehouse monitor: cannot read the cluster view from redis at ${where}: ${(err as Error).message}\n`);
    process.exit(EXIT.unavailable);
  }
  redis.disconnect();
  process.stdout.write(`${JSON.stringify(view)}\n`);
}

/** Alternate screen on, cursor hidden / both restored. */
const ENTER_SCREEN = '\x1b[?1049h\x1b[?25l';
const LEAVE_SCREEN = '\x1b[?25h\x1b[?1049l';
const RECONNECT_MS = 1000;

/** Enters the alternate screen (on a terminal) and arranges for `q`, Ctrl-C and signals to quit cleanly. */
function liveScreen(onQuit: () => void): (text: string) => void {
  const tty = process.stdout.isTTY;
  const quit = () => {
    if (tty) process.stdout.write(LEAVE_SCREEN);
    if (process.stdin.isTTY) process.stdin.setRawMode(false);
    onQuit();
    process.exit(0);
  };
  if (tty) process.stdout.write(ENTER_SCREEN);
  if (process.stdin.isTTY) {
    process.stdin.setRawMode(true);
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', (key: string) => {
      if (key === 'q' || key === 'Q' || key === '\u0003') quit();
    });
  }
  process.on('SIGINT', quit);
  process.on('SIGTERM', quit);
  return (text: string) => process.stdout.write(`\x1b[2J\x1b[H${text}\n`);
}

/** `monitor --cluster`, live: every live node from Redis, once a second; Redis away is said, not fatal. */
async function clusterLive(src: ClusterSource): Promise<void> {
  const { readClusterView } = await import('../relay/cluster/presence.ts');
  const { redis, where } = await clusterRedis(src, true);
  const show = liveScreen(() => redis.disconnect());
  let reading = false;
  const tick = () => {
    if (reading) return;
    reading = true;
    readClusterView(redis, src.keyPrefix)
      .then(
        (view) => show(renderClusterView(view, Date.now(), { columns: process.stdout.columns ?? 120, rows: process.stdout.rows ?? 1000 })),
        (err: unknown) => show(`cannot read the cluster view from redis at ${where}: ${(err as Error).message}; retrying every ${RECONNECT_MS / 1000} s… (q quits)`),
      )
      .finally(() => (reading = false));
  };
  tick();
  setInterval(tick, RECONNECT_MS);
}

/** The live view: alternate screen on a terminal, `q` (or Ctrl-C) quits, reconnects when the gateway restarts. */
function live(path: string): void {
  let history: MonitorHistory | undefined;
  let current: Socket | undefined;
  let timer: NodeJS.Timeout | undefined;
  const show = liveScreen(() => current?.destroy());
  const connectOnce = () => {
    const socket = connect({ path });
    current = socket;
    const reader = new MonitorDocReader();
    let connected = false;
    socket.setEncoding('utf8');
    const refresh = () => socket.write('{"method":"refresh","params":{"printAll":false}}\n');
    socket.on('connect', () => {
      connected = true;
      refresh();
      timer = setInterval(refresh, 1000);
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      if (timer !== undefined) clearInterval(timer);
      timer = undefined;
      // The gateway stopped or restarts: say so and try again (the view resumes by itself).
      show(`${connected ? 'monitor socket closed' : 'cannot reach'} ${path}; retrying every ${RECONNECT_MS / 1000} s… (q quits)`);
      setTimeout(connectOnce, RECONNECT_MS);
    });
    socket.on('data', (text: string) => {
      const docs = reader.push(text);
      if (reader.pendingChars > 16 * 1024 * 1024) socket.destroy();
      for (const line of docs) {
        const view = renderMonitorView(parseDoc(line, path), Date.now(), {
          columns: process.stdout.columns ?? 120,
          rows: process.stdout.rows ?? 1000,
          ...(history === undefined ? {} : { previous: history }),
        });
        history = view.history;
        show(view.text);
      }
    });
  };
  connectOnce();
}

export function monitorCommand(): Command {
  return new Command('monitor')
    .description('Watch the relay live: clients, tunnels, throughput (reads the monitor socket; q quits).')
    .option('-s, --socket <path>', 'monitor socket path (default: from the config)')
    .option('-c, --config <file>', 'config file to take the socket path from')
    .option('--json', 'print one JSON document and exit')
    .option('--cluster', "every live node of the cluster and its tunnels, from the Redis in the config's [cluster] (not the socket)")
    .action(async (opts: { socket?: string; config?: string; json?: boolean; cluster?: boolean }) => {
      if (opts.cluster === true) {
        if (opts.socket !== undefined) {
          process.stderr.write('gatehouse monitor: --cluster reads Redis (from --config), not a socket: drop --socket\n');
          process.exit(EXIT.usage);
        }
        const src = await clusterSource(opts);
        return opts.json === true ? clusterOnce(src) : clusterLive(src);
      }
      const path = await socketPath(opts);
      if (opts.json !== true) return live(path);
      const socket = connect({ path });
      socket.on('error', (err) => {
        process.stderr.write(`gatehouse monitor: cannot read ${path}: ${err.message}\n`);
        process.exit(EXIT.unavailable);
      });
      socket.setEncoding('utf8');
      const reader = new MonitorDocReader();
      socket.write('{"method":"refresh","params":{"printAll":true}}\n');
      socket.on('data', (text: string) => {
        // The first whole document (a push that raced our refresh is as good), printed compact.
        const doc = reader.push(text)[0];
        if (doc === undefined) {
          if (reader.pendingChars > 16 * 1024 * 1024) socket.destroy();
          return;
        }
        process.stdout.write(`${JSON.stringify(parseDoc(doc, path))}\n`);
        socket.destroy();
      });
    });
}
