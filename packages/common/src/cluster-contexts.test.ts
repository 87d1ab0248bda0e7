import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  contextsPath,
  findContext,
  formatContexts,
  NO_CONTEXTS,
  parseContexts,
  removeContext,
  upsertContext,
  useContext,
} from './cluster-contexts.js';
import { ErrorCode, isDroverError } from './errors.js';

const prod = {
  name: 'prod',
  nats: ['tls://10.0.0.1:4222', 'tls://10.0.0.2:4222'],
  caFile: '/etc/drover/certs/ca.crt',
  certFile: '/etc/drover/certs/operator/alice.crt',
  keyFile: '/etc/drover/certs/operator/alice.key',
};

test('contextsPath: DROVER_CONFIG, else XDG_CONFIG_HOME, else ~/.config', () => {
  assert.equal(contextsPath({ DROVER_CONFIG: '/x/c.json' }, '/root'), '/x/c.json');
  assert.equal(contextsPath({ XDG_CONFIG_HOME: '/cfg' }, '/root'), '/cfg/drover/contexts.json');
  assert.equal(contextsPath({}, '/home/a/'), '/home/a/.config/drover/contexts.json');
});

test('upsert: the first context becomes current; later ones only when asked', () => {
  let f = upsertContext(NO_CONTEXTS, prod, false);
  assert.equal(f.current, 'prod');
  f = upsertContext(f, { name: 'lab', nats: ['nats://127.0.0.1:4222'] }, false);
  assert.equal(f.current, 'prod');
  assert.deepEqual(
    f.contexts.map((c) => c.name),
    ['lab', 'prod'],
  );
  f = upsertContext(f, { ...prod, nats: ['tls://10.0.0.9:4222'] }, true);
  assert.equal(f.contexts.length, 2, 'replaced, not added');
  assert.deepEqual(findContext(f, 'prod').nats, ['tls://10.0.0.9:4222']);
  f = useContext(f, 'lab');
  assert.equal(f.current, 'lab');
  f = removeContext(f, 'lab');
  assert.equal(f.current, null);
  assert.deepEqual(parseContexts(formatContexts(f), 'f'), f, 'round trip');
});

test('unknown names are NotFound and list the known ones', () => {
  const f = upsertContext(NO_CONTEXTS, prod, true);
  for (const fn of [() => useContext(f, 'nope'), () => findContext(f, 'nope')]) {
    assert.throws(fn, (e: unknown) => {
      assert.ok(isDroverError(e, ErrorCode.NotFound));
      assert.match(e.message, /no context nope \(contexts: prod\)/);
      return true;
    });
  }
});

test('parse refuses bad files with where and why', () => {
  const bad: [string, RegExp][] = [
    ['{', /not JSON/],
    ['{"format":2}', /unknown format 2/],
    ['{"format":1,"contexts":[{"name":"a b","nats":["x"]}]}', /bad name/],
    ['{"format":1,"contexts":[{"name":"a","nats":[]}]}', /nats must be a non-empty list/],
    ['{"format":1,"contexts":[{"name":"a","nats":["x"],"caFile":"ca.crt"}]}', /absolute path/],
    ['{"format":1,"contexts":[{"name":"a","nats":["x"],"certFile":"/c"}]}', /go together/],
    ['{"format":1,"contexts":[{"name":"a","nats":["x"]},{"name":"a","nats":["y"]}]}', /twice/],
  ];
  for (const [text, re] of bad) {
    assert.throws(
      () => parseContexts(text, '/c.json'),
      (e: unknown) => isDroverError(e, ErrorCode.InvalidArgument) && re.test(e.message),
      text,
    );
  }
  // A current that names nothing is dropped, not an error.
  assert.equal(
    parseContexts('{"format":1,"current":"gone","contexts":[]}', '/c.json').current,
    null,
  );
});
