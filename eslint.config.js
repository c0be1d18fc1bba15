// Lint rules: typescript-eslint strict-type-checked, plus the layering rule from docs/architecture.md
// (front ends never import each other; protocol/ folders stay free of sockets).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const frontEnds = ['relay', 'card-bridge', 'sealed-api'];
const sockets = ['node:net', 'node:tls', 'node:http', 'node:https', 'node:dgram', 'ws', 'undici'];

/** One `no-restricted-imports` block per folder: `patterns` for the folders it may not reach, `paths` for modules. */
function layeringBlocks() {
  const restrict = (files, groups, paths = []) => ({
    files,
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: groups.map(([group, message]) => ({ group: [group], message })),
          ...(paths.length === 0 ? {} : { paths: paths.map((name) => ({ name, message: 'protocol/ is pure: no sockets.' })) }),
        },
      ],
    },
  });
  const upward = [
    ['**/cli/**', 'Nothing imports the CLI: it is the outermost layer.'],
    ['**/gateway.ts', 'Only the CLI imports the composition root.'],
    ['**/ops/**', 'ops/ subscribes to the front ends (core/events.ts); they never import it.'],
  ];
  const fromCore = [
    ...frontEnds.map((fe) => [`**/${fe}/**`, 'core/ knows no front end.']),
    ...upward,
    ['**/config.ts', 'core/ knows no front end config.'],
  ];
  const blocks = [restrict(['src/core/**/*.ts'], fromCore)];
  for (const fe of frontEnds) {
    const others = frontEnds.filter((o) => o !== fe).map((o) => [`**/${o}/**`, 'Front ends never import each other.']);
    blocks.push(restrict([`src/${fe}/**/*.ts`], [...others, ...upward]));
    blocks.push(restrict([`src/${fe}/protocol/**/*.ts`], [...others, ...upward, ['../config.ts', 'protocol/ takes no config.']], sockets));
  }
  return blocks;
}

export default tseslint.config(
  { ignores: ['node_modules/', 'dist/', 'bin/', 'eslint.config.js', 'scripts/*.mjs', 'bench/**/*.mjs'] },
  js.configs.recommended,
  ...tseslint.configs.strictTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-confusing-void-expression': 'off',
      '@typescript-eslint/no-unnecessary-condition': 'off',
      // `void p` is not an escape: every promise gets a rejection path (.catch, await, or a returned chain).
      '@typescript-eslint/no-floating-promises': ['error', { ignoreVoid: false, ignoreIIFE: false }],
      // Client-chosen strings must never be looked up on objects with prototypes: `x[name as keyof T]`
      // is how that slips through the type checker, so the cast is refused in src/.
      'no-restricted-syntax': [
        'error',
        {
          selector: "MemberExpression[computed=true] > TSAsExpression.property > TSTypeOperator[operator='keyof']",
          message: 'Do not index with `as keyof`: use a Map, Object.hasOwn or a null-prototype table (a client-chosen key like "constructor" matches inherited members).',
        },
      ],
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: false }],
    },
  },
  // Layering (docs/architecture.md): cli → gateway → front ends → core. ESLint keeps only the last
  // `no-restricted-imports` that matches a file, so each folder gets ONE block listing all of its rules.
  ...layeringBlocks(),
  {
    files: ['test/**/*.ts', 'bench/**/*.ts'],
    rules: {
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-floating-promises': 'off',
    },
  },
);
