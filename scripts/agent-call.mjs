#!/usr/bin/env node
// A small dev command until the `drover` CLI lands: call one agent operation and print the reply.
//   node scripts/agent-call.mjs [--nats URL] HOST OP ['JSON request']
// e.g. node scripts/agent-call.mjs h1 migrate '{"jobId":"job-1234","destination":"h2"}'
// Exit codes: 0 ok, 1 the agent answered with a failure (printed as JSON), 2 bad usage.
import { AgentClient, Bus } from '@drover/bus';

const args = process.argv.slice(2);
let nats = process.env.DROVER_NATS_SERVERS ?? 'nats://127.0.0.1:4222';
if (args[0] === '--nats') {
  nats = args[1] ?? nats;
  args.splice(0, 2);
}
const [host, op, json = '{}'] = args;
if (!host || !op) {
  console.error("usage: agent-call.mjs [--nats URL] HOST OP ['JSON request']");
  process.exit(2);
}
let req;
try {
  req = JSON.parse(json);
} catch (err) {
  console.error(`agent-call: the request is not JSON: ${err.message}`);
  process.exit(2);
}
const bus = await Bus.connect({
  servers: nats.split(','),
  name: 'agent-call',
  requestTimeoutMs: 300_000,
});
try {
  const reply = await new AgentClient(bus, host).call(op, req);
  console.log(JSON.stringify(reply, null, 2));
} catch (err) {
  console.log(
    JSON.stringify({ code: err.code, message: err.message, details: err.details }, null, 2),
  );
  process.exitCode = 1;
} finally {
  await bus.close();
}
