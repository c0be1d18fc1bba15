/**
 * The package as an operator installs it: `npm pack` (prepack builds dist/) in a copy of this tree, then
 * `npm install -g --prefix DIR` of the tarball, then the installed `gatehouse`: --version, check-config and a
 * short `serve` on loopback, stopped with SIGTERM by PID. Nothing from the checkout is used at run time: the
 * installed package has no TypeScript, no tsx and no dev dependency. Runtime dependencies come from npm's
 * cache (--prefer-offline), else the registry. The Dockerfile's build and install steps are these commands.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { deadline, tempDir } from '../helpers/relay.ts';
import { gatehouse } from '../helpers/cli.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** Top-level entries left out of the copy: what `npm ci`, builds and runs make, and git's own. */
const NOT_COPIED = new Set(['node_modules', '.git', 'dist', 'var', '.gatehouse']);

/** The environment of a child npm or gatehouse: ours without the npm_* variables an outer `npm test` set. */
function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k)) env[k] = v;
  return { ...env, ...extra };
}

/** Runs a command to its end within `ms`; rejects with its output when it fails. */
function run(cmd: string, args: string[], opts: { cwd: string; ms: number; env?: NodeJS.ProcessEnv }): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd: opts.cwd, env: opts.env ?? childEnv(), timeout: opts.ms, killSignal: 'SIGKILL', maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err !== null) reject(new Error(`${cmd} ${args.join(' ')} failed (${err.message}):\n${stdout.slice(-2000)}\n${stderr.slice(-4000)}`));
      else resolve({ stdout, stderr });
    });
  });
}

test('npm pack → npm install -g --prefix DIR → the installed gatehouse runs --version, check-config and serve', { timeout: 240_000 }, async (t) => {
  const work = tempDir('gatehouse-pack-');
  const src = join(work, 'src-copy');
  cpSync(ROOT, src, {
    recursive: true,
    filter: (from) => {
      const rel = relative(ROOT, from);
      return rel === '' || (!NOT_COPIED.has(rel.split(sep)[0]!) && rel !== join('native', 'build') && !rel.endsWith('.tgz'));
    },
  });
  // The build needs the dev dependencies (tsc); the checkout's node_modules serves, unchanged.
  const link = join(src, 'node_modules');
  symlinkSync(join(ROOT, 'node_modules'), link, 'dir');
  t.after(() => {
    unlinkSync(link); // the link only, before the copy (and never the checkout's node_modules) goes
    rmSync(work, { recursive: true, force: true });
  });

  const t0 = Date.now();
  const packed = await run('npm', ['pack', '--json', '--pack-destination', work], { cwd: src, ms: 120_000 });
  const tPack = Date.now() - t0;
  const info = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('['))) as { filename: string; files: { path: string }[] }[];
  const files = info[0]!.files.map((f) => f.path);
  for (const f of ['bin/gatehouse.js', 'dist/cli/main.js', 'dist/cli/check-config.js', 'native/binding.gyp', 'native/splice-relay.c', 'scripts/build-native.mjs', 'contrib/systemd/gatehouse.service', 'contrib/docker/gatehouse.toml', 'README.md', 'package.json'])
    assert.ok(files.includes(f), `${f} is packed`);
  const unwanted = files.filter((f) => /\.ts$/.test(f) || /^(src|test|bench|\.ci)\//.test(f) || f.startsWith('native/build/') || f.endsWith('.map'));
  assert.deepEqual(unwanted, [], 'no TypeScript, tests, CI files, build output or source maps in the package');

  const prefix = join(work, 'prefix');
  const t1 = Date.now();
  const installed = await run('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', '--allow-scripts=gatehouse,bufferutil,smartcard', join(work, info[0]!.filename)], { cwd: work, ms: 180_000 });
  const tInstall = Date.now() - t1;
  const pkg = join(prefix, 'lib', 'node_modules', 'gatehouse');
  const deps = readdirSync(join(pkg, 'node_modules'));
  for (const dev of ['tsx', 'typescript', 'esbuild', 'eslint', '@types']) assert.ok(!deps.includes(dev), `${dev} is not installed`);
  assert.ok(!existsSync(join(pkg, 'src')), 'no sources');
  // The install script built the kernel relay in the installed package (strict where the build is required).
  if (process.env.GATEHOUSE_REQUIRE_NATIVE === '1') {
    assert.ok(existsSync(join(pkg, 'native', 'build', 'Release', 'splice_relay.node')), `addon built at install:\n${installed.stdout}\n${installed.stderr}`);
  }

  // The installed command, found on PATH as an operator would run it: only the prefix and node itself.
  const env = childEnv({ PATH: `${join(prefix, 'bin')}:${dirname(process.execPath)}` });
  const version = await run('gatehouse', ['--version'], { cwd: work, ms: 20_000, env });
  assert.equal(version.stdout, '0.1.0\n');

  const cfg = join(work, 'gatehouse.toml');
  writeFileSync(
    cfg,
    [
      '[shutdown]',
      'graceMs = 1000',
      '[relay]',
      'listeners = [{ kind = "tcp", port = 0 }]',
      '[relay.monitor]',
      'path = "monitor.sock"',
      '[cardBridge]',
      'listeners = [{ kind = "tcp", port = 0 }]',
      'backends = [{ kind = "simulator" }]',
      '[sealedApi]',
      'port = 0',
      'stateDir = "state"',
      '[ops]',
      'port = 0',
      '',
    ].join('\n'),
  );
  const checked = await run('gatehouse', ['check-config', cfg], { cwd: work, ms: 20_000, env });
  assert.match(checked.stdout, /valid \(relay, cardBridge, sealedApi enabled\)/);
  assert.match(checked.stdout, /\[relay\.limits\]\nmaxConnections = 20000\n/);
  // The service's sample config, as the package ships it, is valid (with a token file beside it).
  const etc = join(work, 'etc');
  mkdirSync(etc);
  copyFileSync(join(pkg, 'contrib', 'systemd', 'gatehouse.toml'), join(etc, 'gatehouse.toml'));
  writeFileSync(join(etc, 'tokens'), `sha256:${'ab'.repeat(32)} alice\n`);
  const sample = await run('gatehouse', ['check-config', '--json', join(etc, 'gatehouse.toml')], { cwd: work, ms: 20_000, env });
  const sampleDoc = JSON.parse(sample.stdout) as { relay: { monitor: { path: string } }; ops?: { port: number } };
  assert.equal(sampleDoc.relay.monitor.path, '/run/gatehouse/monitor.sock');
  assert.equal(sampleDoc.ops?.port, 9180);
  // So is the container's (the Dockerfile copies it to /etc/gatehouse/gatehouse.toml).
  copyFileSync(join(pkg, 'contrib', 'docker', 'gatehouse.toml'), join(etc, 'container.toml'));
  const container = await run('gatehouse', ['check-config', '--json', join(etc, 'container.toml')], { cwd: work, ms: 20_000, env });
  assert.equal((JSON.parse(container.stdout) as { ops?: { host: string; port: number } }).ops?.port, 9180, 'the port the HEALTHCHECK asks');

  const served = gatehouse(['serve', '--config', cfg], { cwd: work, exactEnv: env, command: 'gatehouse' });
  const server = served.child;
  try {
    const out = await served.waitForStdout('Press Ctrl-C', 30_000);
    const err = (): string => served.stderr();
    // npm linked the command to bin/gatehouse.js, whose #! line starts node (node-flags.test.ts).
    assert.match(readFileSync(`/proc/${String(server.pid)}/cmdline`, 'utf8').split('\0')[0] ?? '', /node$/);
    // Installed: the banner names the command on PATH, not `npx gatehouse`.
    assert.match(out, /^ {2}monitor: gatehouse monitor --socket /m);
    assert.match(out, /try: gatehouse card list/);
    assert.doesNotMatch(out, /npx gatehouse/);
    if (process.env.GATEHOUSE_REQUIRE_NATIVE === '1') assert.match(err(), /"kernelRelay":true/);
    // The relay answers nymea's Hello on its TCP listener.
    const port = Number(/tcp:\/\/127\.0\.0\.1:(\d+)/.exec(out)![1]);
    const hello = await deadline(
      new Promise<string>((resolve, reject) => {
        const s = connect(port, '127.0.0.1', () => s.write('{"id":0,"method":"RemoteProxy.Hello"}\n'));
        let got = '';
        s.setEncoding('utf8').on('data', (t: string) => {
          got += t;
          if (got.includes('\n')) {
            s.destroy();
            resolve(got);
          }
        });
        s.on('error', reject);
      }),
      10_000,
      'the relay Hello',
    );
    assert.match(hello, /"name":"gatehouse"/);
    // The Dockerfile's HEALTHCHECK command, pointed at this ops listener, says healthy.
    const opsPort = /Ops: http:\/\/127\.0\.0\.1:(\d+)\/metrics/.exec(out)?.[1];
    assert.ok(opsPort !== undefined, out);
    const healthcheck = /^HEALTHCHECK .*\\\n\s+CMD (\[.*\])$/m.exec(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'))?.[1];
    assert.ok(healthcheck !== undefined, 'the Dockerfile has a HEALTHCHECK CMD [...]');
    const [cmd, ...args] = (JSON.parse(healthcheck) as string[]).map((a) => a.replace('127.0.0.1:9180', `127.0.0.1:${opsPort}`));
    assert.equal(cmd, 'node');
    await run(process.execPath, args, { cwd: work, ms: 10_000, env });
    server.kill('SIGTERM');
    assert.deepEqual(await served.exited(15_000), { code: 0, signal: null });
    assert.match(err(), /"msg":"stopped"/);
  } finally {
    if (server.exitCode === null && server.signalCode === null) server.kill('SIGKILL');
  }
  t.diagnostic(`npm pack ${tPack} ms, npm install -g ${tInstall} ms`);
});
