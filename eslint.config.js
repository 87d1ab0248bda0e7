// ESLint flat config: strict TypeScript, no import cycles, no floating promises (type-aware: a
// promise is awaited, returned, given a rejection handler, or discarded with an explicit `void`,
// which says "fire and forget" and should carry its own .catch), and the layering
// rules of STYLE.md (only packages/native imports koffi; only packages/bus imports @nats-io; only
// packages/metrics imports prom-client; playwright-core only in test/; libraries never import
// apps, e.g. packages/testbed starts the agent and controller by their bin paths; no app imports
// another app: agent, controller and deploy are each their own program). test/ is the harness
// that drives the apps (it starts them, and its suites call their modules directly), so it may
// import any of them; nothing imports test/.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import importX from 'eslint-plugin-import-x';

/** The programs: no library imports one, and none imports another. */
const apps = ['@drover/agent', '@drover/controller', '@drover/deploy'];
/** Each app's folder and package name. */
const appDirs = {
  agent: '@drover/agent',
  controller: '@drover/controller',
  deploy: '@drover/deploy',
};

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
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { 'import-x': importX },
    rules: {
      // node:test's `test`/`describe` return promises the runner itself awaits.
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [
            { from: 'package', package: 'node:test', name: ['test', 'describe', 'it', 'suite'] },
          ],
        },
      ],
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
  forbid(['packages/**'], [...apps, '@drover/test'], 'libraries never import apps'),
  ...Object.entries(appDirs).map(([dir, name]) =>
    forbid(
      [`${dir}/**`],
      [...apps.filter((a) => a !== name), '@drover/test'],
      'no app imports another app (only test/, the harness, drives them all)',
    ),
  ),
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
  // The console's page is its own TypeScript program (DOM, no Node): its tsconfig says so.
  {
    files: ['packages/console/src/web/**/*.ts'],
    languageOptions: {
      parserOptions: {
        projectService: false,
        project: './packages/console/tsconfig.web.json',
        tsconfigRootDir: import.meta.dirname,
      },
    },
  },
  // Plain JavaScript (this file, the scripts run by node) is not type-checked.
  {
    files: ['**/*.js', '**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: {
      ...tseslint.configs.disableTypeChecked.languageOptions,
      globals: { process: 'readonly', console: 'readonly', URL: 'readonly' },
    },
  },
  {
    files: ['packages/**/src/**/*.ts'],
    ignores: ['**/*.test.ts'],
    rules: { 'no-console': 'error' },
  },
);
