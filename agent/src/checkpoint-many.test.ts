/** Unit tests of `checkpoint-many` (checkpoint.ts): a host's dumps of a cut in one request. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DroverError, ErrorCode } from '@drover/common';
import type { AgentRequest, ImageInfo } from '@drover/protocol';
import { checkpointMany, DumpRuns } from './checkpoint.js';

const KEY = 'A'.repeat(43) + '=';
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

function image(imageId: string, jobId: string): ImageInfo {
  return {
    imageId,
    jobId,
    host: 'h1',
    dir: `/x/${imageId}`,
    createdAt: '2026-12-07T00:00:00Z',
    leaveRunning: true,
    sizeBytes: 1,
    frozenMs: 1,
    dumpMs: 1,
  };
}

/** An agent whose `checkpoint` takes a few turns, with the images it has made. */
function host(fail: (jobId: string) => DroverError | null = () => null) {
  const made = new Map<string, ImageInfo>();
  const calls: string[] = [];
  let running = 0;
  let most = 0;
  const agent = {
    dumpRuns: new DumpRuns(),
    images: { info: (id: string) => Promise.resolve(made.get(id) ?? null) },
  };
  const checkpoint = async (r: AgentRequest<'checkpoint'>): Promise<ImageInfo> => {
    calls.push(r.jobId);
    assert.equal(r.key, KEY);
    assert.equal(r.leaveRunning, true);
    if (made.has(r.imageId!))
      throw new DroverError(ErrorCode.AlreadyExists, `image ${r.imageId} exists`);
    most = Math.max(most, ++running);
    for (let i = 0; i < 3; i++) await tick();
    running--;
    const err = fail(r.jobId);
    if (err) throw err;
    const img = image(r.imageId!, r.jobId);
    made.set(img.imageId, img);
    return img;
  };
  return { agent, checkpoint, calls, made, most: () => most };
}

const req = (n: number, parallel = 2): AgentRequest<'checkpoint-many'> => ({
  runId: 'op-1',
  dumps: Array.from({ length: n }, (_, i) => ({ jobId: `j${i}`, imageId: `img-${i}` })),
  leaveRunning: true,
  key: KEY,
  parallel,
});

test('every dump of the request, `parallel` at once, each image in the order asked', async () => {
  const h = host();
  const r = await checkpointMany(h.agent, req(5), h.checkpoint);
  assert.deepEqual(
    r.dumps.map((d) => d.image.jobId),
    ['j0', 'j1', 'j2', 'j3', 'j4'],
  );
  assert.equal(h.most(), 2);
  for (const d of r.dumps) assert.ok(d.startedMs >= 0 && d.tookMs >= 0);
});

test('after a failure no dump starts; the request fails with it once the running ones end', async () => {
  const h = host((id) =>
    id === 'j0' ? new DroverError(ErrorCode.Criu, 'dump of j0 failed') : null,
  );
  await assert.rejects(checkpointMany(h.agent, req(6), h.checkpoint), /dump of j0 failed/);
  // j1 ran beside j0 and ended; nothing after.
  assert.deepEqual(h.calls, ['j0', 'j1']);
});

test('checkpoint-stop of the run: no dump starts after it, the ones running end', async () => {
  const h = host();
  const many = checkpointMany(h.agent, req(6), h.checkpoint);
  await tick();
  assert.equal(h.agent.dumpRuns.stop('op-2'), false, 'another run is not this one');
  assert.equal(h.agent.dumpRuns.stop('op-1'), true);
  await assert.rejects(many, (err: DroverError) => {
    assert.equal(err.code, ErrorCode.FailedPrecondition);
    assert.match(err.message, /checkpoint op-1 was stopped: job j2 was not dumped/);
    return true;
  });
  assert.deepEqual(h.calls, ['j0', 'j1']);
  assert.deepEqual([...h.made.keys()], ['img-0', 'img-1']);
  assert.equal(h.agent.dumpRuns.stop('op-1'), false, 'the run ended');
});

test("an image an earlier request made counts as made; another job's image of that id does not", async () => {
  const h = host();
  h.made.set('img-1', image('img-1', 'j1'));
  const r = await checkpointMany(h.agent, req(3), h.checkpoint);
  assert.deepEqual(
    r.dumps.map((d) => d.image.imageId),
    ['img-0', 'img-1', 'img-2'],
  );
  const other = host();
  other.made.set('img-1', image('img-1', 'someone-else'));
  await assert.rejects(checkpointMany(other.agent, req(3), other.checkpoint), /img-1 exists/);
});

test("the next dump's CRIU starts once the last one's is done, not when its call ends", async () => {
  const events: string[] = [];
  let criu = 0;
  let most = 0;
  const agent = { dumpRuns: new DumpRuns(), images: { info: () => Promise.resolve(null) } };
  const checkpoint = async (
    r: AgentRequest<'checkpoint'>,
    dumped: () => void,
  ): Promise<ImageInfo> => {
    events.push(`start ${r.jobId}`);
    most = Math.max(most, ++criu);
    for (let i = 0; i < 3; i++) await tick();
    criu--;
    dumped();
    // Its image recorded after CRIU (size, manifest, log line): the next dump starts meanwhile.
    for (let i = 0; i < 5; i++) await tick();
    events.push(`end ${r.jobId}`);
    return image(r.imageId!, r.jobId);
  };
  const r = await checkpointMany(agent, req(3, 1), checkpoint);
  assert.deepEqual(
    r.dumps.map((d) => d.image.jobId),
    ['j0', 'j1', 'j2'],
  );
  assert.equal(most, 1, 'never more CRIU dumps at once than asked');
  assert.ok(events.indexOf('start j1') < events.indexOf('end j0'), events.join(', '));
  assert.ok(events.indexOf('start j2') < events.indexOf('end j1'), events.join(', '));
});

test('a dump that fails before CRIU is done frees its place only once the failure is known', async () => {
  const h = host((id) =>
    id === 'j1' ? new DroverError(ErrorCode.Criu, 'dump of j1 failed') : null,
  );
  await assert.rejects(checkpointMany(h.agent, req(4, 1), h.checkpoint), /dump of j1 failed/);
  assert.deepEqual(h.calls, ['j0', 'j1']);
});
