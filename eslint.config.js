// Lint rules: typescript-eslint strict-type-checked, plus the layering rule from docs/architecture.md
// (front ends never import each other; protocol/ folders stay free of sockets).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const frontEnds = ['relay', 'card-bridge', 'sealed-api'];

export default tseslint.config(
  { ignores: ['node_modules/', 'dist/', 'bin/', 'eslint.config.js', 'scripts/*.mjs'] },
  js.configs.recommended,
  ...tseslint.configs.strictTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-confusing-void-expression': 'off',
      '@typescript-eslint/no-unnecessary-condition': 'off',
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: false }],
    },
  },
  ...frontEnds.map((fe) => ({
    files: [`src/${fe}/**/*.ts`],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: frontEnds
            .filter((o) => o !== fe)
            .map((o) => ({ group: [`**/${o}/**`], message: 'Front ends never import each other.' })),
        },
      ],
    },
  })),
  {
    files: ['src/*/protocol/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        { paths: ['node:net', 'node:tls', 'node:http', 'node:https', 'ws'].map((name) => ({ name, message: 'protocol/ is pure: no sockets.' })) },
      ],
    },
  },
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
