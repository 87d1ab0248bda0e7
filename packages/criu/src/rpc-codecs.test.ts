/** compileRpcCodecs: every CRIU RPC codec compiled up front (its own process: nothing used yet). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  compileRpcCodecs,
  decodeRequest,
  encodeRequest,
  uncompiledRpcTypes,
} from './rpc-schema.js';

test('compileRpcCodecs compiles every message type up front', () => {
  assert.ok(uncompiledRpcTypes().includes('criu_req'), 'protobufjs compiles at first use');
  assert.ok(compileRpcCodecs() >= 10);
  assert.deepEqual(uncompiledRpcTypes(), []);
  const bytes = encodeRequest({ type: 1, opts: { images_dir_fd: 3, ps: { port: 1 } } });
  assert.equal(decodeRequest(bytes).opts?.ps?.port, 1, 'and they work');
});
