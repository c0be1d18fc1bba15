/**
 * A real `redis-server` for the cluster tests: started in a temp dir on a unix socket (no port to race
 * for), no persistence, killed by PID. Restartable on the same socket (empty, as a real restart without
 * persistence). `redisMissing()` says why tests cannot run: they skip outside CI and fail on CI
 * (GATEHOUSE_REQUIRE_REDIS=1, or CI=true).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:net';
import { RedisRendezvous, type RedisRendezvousOptions } from '../../src/relay/cluster/rendezvous-redis.ts';
import { Secret } from '../../src/core/config/secret.ts';
import { silentLogger } from '../../src/core/log.ts';

/** True when a missing redis-server must fail the tests instead of skipping them. */
export function redisRequired(): boolean {
  return process.env.GATEHOUSE_REQUIRE_REDIS === '1' || process.env.CI === 'true';
}

/** A reason the tests cannot run here, or undefined. */
export function redisMissing(): string | undefined {
  const r = spawnSync('redis-server', ['--version'], { encoding: 'utf8' });
  if (r.error !== undefined || r.status !== 0) return 'redis-server is not installed (Debian package redis-server; .ci/packages-cluster.txt)';
  return undefined;
}

/** `skip` option for node:test: the reason outside CI, false on CI (so the test runs and fails). */
export function skipUnlessRedis(): string | false {
  const why = redisMissing();
  return why !== undefined && !redisRequired() ? why : false;
}

export interface TestRedis {
  readonly socket: string;
  readonly pid: number;
  /** SIGKILLs the server (by its PID) and waits for it to exit. */
  kill(): Promise<void>;
  /** Starts a fresh, empty server on the same socket. */
  restart(): Promise<void>;
  /** Kills it and removes the temp dir. */
  stop(): Promise<void>;
}

async function waitForSocket(path: string, child: ChildProcess, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode}`);
    if (existsSync(path)) {
      const ok = await new Promise<boolean>((resolve) => {
        const s = connect(path);
        s.once('connect', () => {
          s.write('PING\r\n');
        });
        s.once('data', (d) => {
          s.destroy();
          resolve(d.toString().startsWith('+PONG'));
        });
        s.once('error', () => resolve(false));
      });
      if (ok) return;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`redis-server did not come up within ${timeoutMs} ms`);
}

export async function startRedis(): Promise<TestRedis> {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-redis-'));
  const socket = join(dir, 'redis.sock');
  let child: ChildProcess;
  const launch = async () => {
    rmSync(socket, { force: true });
    child = spawn('redis-server', ['--port', '0', '--unixsocket', socket, '--unixsocketperm', '700', '--save', '', '--appendonly', 'no', '--dir', dir, '--loglevel', 'warning'], { stdio: 'ignore' });
    await waitForSocket(socket, child, 5000);
  };
  const kill = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
  };
  await launch();
  return {
    socket,
    get pid() {
      return child.pid ?? -1;
    },
    kill,
    restart: async () => {
      await kill();
      await launch();
    },
    stop: async () => {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A RedisRendezvous on the test server with the relay's defaults (alone 8 s, 64 waiting per token, 30 s
 * leases, 1 s commands, no logs), `over` replacing any of them. The caller closes it.
 */
export function testRendezvous<P>(redis: TestRedis, nodeId: string, over: Partial<Omit<RedisRendezvousOptions, 'redisUrl' | 'nodeId'>> = {}): RedisRendezvous<P> {
  return new RedisRendezvous<P>({
    redisUrl: redis.socket,
    secret: new Secret('test-cluster-secret-0123456789'),
    nodeId,
    aloneMs: 8000,
    maxWaitingPerToken: 64,
    tunnelLeaseMs: 30000,
    keyPrefix: 'gatehouse:',
    commandTimeoutMs: 1000,
    log: silentLogger(),
    ...over,
  });
}

/** Sends one command to the test server over its unix socket (RESP) and resolves with the first reply bytes. */
export function redisCommand(redis: TestRedis, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(redis.socket);
    s.once('error', reject);
    s.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`);
    s.once('data', (d) => {
      s.destroy();
      resolve(d.toString());
    });
  });
}
