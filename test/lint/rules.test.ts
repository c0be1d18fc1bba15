/**
 * The lint rules that keep the design honest must actually fire: each fixture below breaks one rule and
 * must fail lint with it (linted as if it were the named file, so the per-folder rules apply).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ESLint } from 'eslint';

const root = new URL('../..', import.meta.url).pathname;
const eslint = new ESLint({ cwd: root });

async function rulesFired(filePath: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath });
  return (result?.messages ?? []).map((m) => m.ruleId ?? m.message);
}

const cases: { name: string; file: string; code: string; rule: string }[] = [
  { name: 'core imports a front end', file: 'src/core/errors.ts', code: "import { createRelayServer } from '../relay/server.ts';\nexport const x = createRelayServer;\n", rule: 'no-restricted-imports' },
  { name: 'core imports the CLI', file: 'src/core/errors.ts', code: "import { EXIT } from '../cli/exit.ts';\nexport const x = EXIT;\n", rule: 'no-restricted-imports' },
  { name: 'a front end imports another', file: 'src/relay/server.ts', code: "import { LineSession } from '../card-bridge/session.ts';\nexport const x = LineSession;\n", rule: 'no-restricted-imports' },
  { name: 'a front end imports the composition root', file: 'src/sealed-api/registry.ts', code: "import { createGateway } from '../gateway.ts';\nexport const x = createGateway;\n", rule: 'no-restricted-imports' },
  { name: 'a front end imports ops/', file: 'src/card-bridge/server.ts', code: "import { createOpsServer } from '../ops/server.ts';\nexport const x = createOpsServer;\n", rule: 'no-restricted-imports' },
  { name: 'protocol/ imports a socket module', file: 'src/relay/protocol/json.ts', code: "import { connect } from 'node:net';\nexport const x = connect;\n", rule: 'no-restricted-imports' },
  { name: 'protocol/ imports another front end (the front-end rule still applies there)', file: 'src/card-bridge/protocol/lines.ts', code: "import { API } from '../../relay/protocol/api.ts';\nexport const x = API;\n", rule: 'no-restricted-imports' },
  { name: 'a floating promise hidden behind void', file: 'src/core/net.ts', code: 'async function f(): Promise<void> {}\nexport function g(): void {\n  void f();\n}\n', rule: '@typescript-eslint/no-floating-promises' },
  { name: 'indexing with `as keyof`', file: 'src/core/net.ts', code: "const T = { a: 1 };\nexport function g(name: string): number {\n  return T[name as keyof typeof T];\n}\n", rule: 'no-restricted-syntax' },
];

for (const c of cases) {
  test(`lint refuses: ${c.name}`, { timeout: 60_000 }, async () => {
    const fired = await rulesFired(c.file, c.code);
    assert.ok(fired.includes(c.rule), `expected ${c.rule}, got ${JSON.stringify(fired)}`);
  });
}

test('lint accepts the allowed direction (a front end imports core)', { timeout: 60_000 }, async () => {
  const fired = await rulesFired('src/relay/server.ts', "import { GatewayError } from '../core/errors.ts';\nexport const x = GatewayError;\n");
  assert.deepEqual(fired.filter((r) => r === 'no-restricted-imports'), []);
});
