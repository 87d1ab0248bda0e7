// ESLint flat config: strict TypeScript, no import cycles, and the layering rules of STYLE.md
// (only packages/native imports koffi; only packages/bus imports @nats-io; only packages/metrics
// imports prom-client; playwright-core only in test/; libraries never import
// apps, e.g. packages/testbed starts the agent and controller by their bin paths; no app imports
// another app).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import importX from 'eslint-plugin-import-x';

const apps = ['@drover/agent', '@drover/controller', '@drover/deploy', '@drover/test'];

/** Forbid `names` (package patterns) in the files matched by `files`, with a reason. */
const forbid = (files, names, message) => ({
  files,
  rules: {
    'no-restricted-imports': [
      'error',
      { patterns: names.map((group) => ({ group: [group, `${group}/*`], message })) },
    ],
  },
});

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', '**/.turbo/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    plugins: { 'import-x': importX },
    rules: {
      'import-x/no-cycle': 'error',
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' },
      ],
      'no-console': 'off',
    },
  },
  forbid(
    ['packages/!(native)/**', 'agent/**', 'controller/**', 'deploy/**', 'test/**'],
    ['koffi'],
    'koffi is used only inside packages/native',
  ),
  forbid(
    ['packages/!(bus)/**', 'agent/**', 'controller/**', 'deploy/**', 'test/**'],
    ['@nats-io'],
    '@nats-io/* is used only inside packages/bus',
  ),
  forbid(['packages/**'], apps, 'libraries never import apps'),
  forbid(
    ['packages/!(metrics)/**', 'agent/**', 'controller/**', 'deploy/**', 'test/**'],
    ['prom-client'],
    'prom-client is used only inside packages/metrics',
  ),
  forbid(
    ['packages/**', 'agent/**', 'controller/**', 'deploy/**'],
    ['playwright-core'],
    'playwright-core drives the browser in the test suites only',
  ),
  {
    files: ['packages/**/src/**/*.ts'],
    ignores: ['**/*.test.ts'],
    rules: { 'no-console': 'error' },
  },
);
