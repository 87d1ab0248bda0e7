/** droverBin finds the built daemons through their packages' `bin`, never by importing them. */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import { droverBin } from './bins.js';

test('the agent and controller bins resolve to their built entry points', () => {
  const agent = droverBin('drover-agent');
  const controller = droverBin('drover-controller');
  assert.match(agent, /\/agent\/dist\/main\.js$/);
  assert.match(controller, /\/controller\/dist\/main\.js$/);
  assert.ok(existsSync(agent) && existsSync(controller));
});
