/**
 * Host setup's fixes to CRIU's source (deploy/setup-host.sh): each applies to the shape it fixes,
 * leaves a source that no longer needs it alone, and never edits a source it does not recognise.
 * The function is taken from the script itself and run on small sources in CRIU's layout.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';

const run = promisify(execFile);
const SCRIPT = fileURLToPath(new URL('../setup-host.sh', import.meta.url));
let dir: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'drover-criu-fixes-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** A receive loop in the shape of CRIU 4.2.1's: one packet freed after the loop. */
const LEAKY = [
  'int other(void)',
  '{',
  '\tgnutls_packet_t packet;',
  '\treturn 0;',
  '}',
  '',
  'int tls_recv_data_to_fd(int fd, unsigned long len)',
  '{',
  '\tgnutls_packet_t packet;',
  '',
  '\twhile (len > 0) {',
  '\t\tgnutls_datum_t pdata;',
  '\t\tif (gnutls_record_recv_packet(session, &packet) <= 0)',
  '\t\t\tbreak;',
  '\t\tgnutls_packet_get(packet, &pdata, NULL);',
  '\t\tlen -= pdata.size;',
  '\t}',
  'err:',
  '\tgnutls_packet_deinit(packet);',
  '\treturn (len > 0);',
  '}',
  '',
].join('\n');

/** Run the script's fix on a source tree holding `tlsC`; its log and the file afterwards. */
async function fix(name: string, tlsC: string): Promise<{ log: string; after: string }> {
  const src = join(dir, name);
  mkdirSync(join(src, 'criu'), { recursive: true });
  writeFileSync(join(src, 'criu', 'tls.c'), tlsC);
  const body = `set -euo pipefail
log() { printf 'setup-host: %s\\n' "$*" >&2; }
eval "$(sed -n '/^fix_criu_tls_recv_frees_packets() {/,/^}/p' "$1")"
fix_criu_tls_recv_frees_packets "$2"`;
  const { stderr } = await run('bash', ['-c', body, 'fix', SCRIPT, src]);
  return { log: stderr, after: readFileSync(join(src, 'criu', 'tls.c'), 'utf8') };
}

test('the leaking receive loop frees each packet once written, and only that function changes', async () => {
  const r = await fix('leaky', LEAKY);
  assert.match(r.log, /tls-recv-frees-packets: applied/);
  const fn = r.after.slice(r.after.indexOf('int tls_recv_data_to_fd'));
  assert.match(fn, /\tgnutls_packet_t packet = NULL;\n/);
  assert.match(
    fn,
    /\t\tlen -= pdata\.size;\n\t\tgnutls_packet_deinit\(packet\);\n\t\tpacket = NULL;\n\t\}/,
  );
  // The other function's declaration is untouched.
  assert.ok(r.after.startsWith('int other(void)\n{\n\tgnutls_packet_t packet;\n'));
  // Applying again finds it fixed.
  const again = await fix('leaky-again', r.after);
  assert.match(again.log, /not needed/);
  assert.equal(again.after, r.after);
});

test('a source that already frees each packet, or has another shape, is left as it is', async () => {
  const fixed = LEAKY.replace(
    '\t\tlen -= pdata.size;\n',
    '\t\tlen -= pdata.size;\n\t\tgnutls_packet_deinit(packet);\n',
  );
  const a = await fix('upstream-fixed', fixed);
  assert.match(a.log, /not needed/);
  assert.equal(a.after, fixed);
  const other = LEAKY.replace('\t\tlen -= pdata.size;\n', '\t\tlen = len - pdata.size;\n');
  const b = await fix('other-shape', other);
  assert.match(b.log, /warning: .*source differs, not applied/);
  assert.equal(b.after, other);
});

/**
 * tls-batched-io and page-server-close-pushed are patches carried in the script. The sources they
 * are tried on are built from each patch's own hunks: their old side is CRIU 4.2.1's text (for
 * tls-batched-io, after tls-recv-frees-packets; the script was checked against the real 4.2.1
 * tarball when each patch was made), their new side what the patch must leave.
 */
interface PatchedFile {
  path: string;
  before: string;
  after: string;
}

function patchSources(patchFn: string): PatchedFile[] {
  const script = readFileSync(SCRIPT, 'utf8');
  const start = script.indexOf(`${patchFn}() {\n  cat <<'PATCH'\n`);
  assert.ok(start >= 0, `setup-host.sh carries the patch ${patchFn} prints`);
  const body = script.slice(script.indexOf('\n', script.indexOf("<<'PATCH'", start)) + 1);
  const patch = body.slice(0, body.indexOf('\nPATCH\n') + 1);
  const files: PatchedFile[] = [];
  let cur: { path: string; before: string[]; after: string[] } | undefined;
  const flush = (): void => {
    if (cur) files.push({ path: cur.path, before: cur.before.join(''), after: cur.after.join('') });
  };
  for (const line of patch.split(/(?<=\n)/)) {
    if (line.startsWith('--- ')) continue;
    if (line.startsWith('+++ ')) {
      flush();
      cur = { path: line.slice(6).trim(), before: [], after: [] };
    } else if (line.startsWith('@@')) {
      // Unrelated text between hunks, as in the real file (a hunk at line 1 stays there).
      if (cur?.before.length) {
        const gap = `/* between hunks ${cur.before.length} */\n\n\n\n`;
        cur.before.push(gap);
        cur.after.push(gap);
      }
    } else if (line.startsWith('-')) cur?.before.push(line.slice(1));
    else if (line.startsWith('+')) cur?.after.push(line.slice(1));
    else {
      cur?.before.push(line.slice(1));
      cur?.after.push(line.slice(1));
    }
  }
  flush();
  return files;
}

const BATCHED_IO = { fix: 'tls-batched-io', patchFn: 'criu_tls_batched_io_patch' };
const CLOSE_PUSHED = {
  fix: 'page-server-close-pushed',
  patchFn: 'criu_page_server_close_pushed_patch',
};

/** Run the script's fix `p` on a tree holding `files`; its log and the files afterwards. */
async function applyPatch(
  p: { fix: string; patchFn: string },
  name: string,
  files: ReadonlyMap<string, string>,
): Promise<{ log: string; after: Map<string, string>; strays: string[] }> {
  const src = join(dir, name);
  for (const [path, text] of files) {
    mkdirSync(join(src, path, '..'), { recursive: true });
    writeFileSync(join(src, path), text);
  }
  const body = `set -euo pipefail
log() { printf 'setup-host: %s\\n' "$*" >&2; }
die() { printf 'setup-host: error: %s\\n' "$*" >&2; exit 1; }
eval "$(sed -n "/^$3() {/,/^}/p;/^apply_criu_patch() {/,/^}/p" "$1")"
apply_criu_patch "$4" "$3" "$2"`;
  const { stderr } = await run('bash', ['-c', body, 'fix', SCRIPT, src, p.patchFn, p.fix]);
  const after = new Map([...files.keys()].map((p) => [p, readFileSync(join(src, p), 'utf8')]));
  const strays = readdirSync(join(src, 'criu')).filter((f) => /\.(orig|rej)$/.test(f));
  return { log: stderr, after, strays };
}

test('tls-batched-io patches tls.c and page-xfer.c as tls-recv-frees-packets left them', async () => {
  const files = patchSources(BATCHED_IO.patchFn);
  const [xfer, tls] = files;
  assert.deepEqual(
    files.map((f) => f.path),
    ['criu/page-xfer.c', 'criu/tls.c'],
  );
  assert.ok(xfer && tls);
  // It follows the first fix: the receive loop it rewrites frees each packet already.
  assert.match(tls.before, /\tgnutls_packet_t packet = NULL;\n/);
  assert.match(tls.before, /\t\tgnutls_packet_deinit\(packet\);\n\t\tpacket = NULL;\n/);
  assert.match(tls.after, /writev\(fd, iov, n\)/);
  assert.match(tls.after, /tls_wbatch_flush\(\)/);
  assert.match(xfer.after, /F_SETPIPE_SZ, 1 << 20/);

  const r = await applyPatch(BATCHED_IO, 'batched', new Map(files.map((f) => [f.path, f.before])));
  assert.match(r.log, /tls-batched-io: applied/);
  for (const f of files) assert.equal(r.after.get(f.path), f.after, f.path);
  assert.deepEqual(r.strays, []);

  // Applying again finds it there and changes nothing.
  const again = await applyPatch(BATCHED_IO, 'batched-again', r.after);
  assert.match(again.log, /tls-batched-io: not needed/);
  for (const f of files) assert.equal(again.after.get(f.path), f.after, f.path);
});

test('tls-batched-io leaves a source of another shape as it is, every file of it', async () => {
  const files = patchSources(BATCHED_IO.patchFn);
  const before = new Map(files.map((f) => [f.path, f.before]));
  // page-xfer.c differs in one line the patch relies on; tls.c alone would still match.
  const xfer = before.get('criu/page-xfer.c') ?? '';
  assert.ok(xfer.includes('\t\tif (sk_wait_data(sk) < 0) {\n'));
  before.set(
    'criu/page-xfer.c',
    xfer.replace('if (sk_wait_data(sk) < 0)', 'if (sk_wait_data(sk))'),
  );
  const r = await applyPatch(BATCHED_IO, 'batched-other-shape', before);
  assert.match(r.log, /warning: CRIU fix tls-batched-io: source differs, not applied/);
  for (const [path, text] of before) assert.equal(r.after.get(path), text, path);
  assert.deepEqual(r.strays, []);
});

test("page-server-close-pushed pushes the dump's last command before it waits for its answer", async () => {
  const files = patchSources(CLOSE_PUSHED.patchFn);
  assert.deepEqual(
    files.map((f) => f.path),
    ['criu/page-xfer.c'],
  );
  const [xfer] = files;
  assert.ok(xfer);
  const sent = xfer.after.indexOf('if (send_psi(page_server_sk, &pi))');
  const pushed = xfer.after.indexOf('tcp_nodelay(page_server_sk, true);');
  const waits = xfer.after.indexOf('if (__recv(page_server_sk, &status');
  assert.ok(sent >= 0 && sent < pushed && pushed < waits, 'send, push, then wait');

  const r = await applyPatch(CLOSE_PUSHED, 'close', new Map([[xfer.path, xfer.before]]));
  assert.match(r.log, /page-server-close-pushed: applied/);
  assert.equal(r.after.get(xfer.path), xfer.after);
  assert.deepEqual(r.strays, []);
  const again = await applyPatch(CLOSE_PUSHED, 'close-again', r.after);
  assert.match(again.log, /page-server-close-pushed: not needed/);
  assert.equal(again.after.get(xfer.path), xfer.after);

  // A source where the wait reads otherwise is left alone.
  const other = xfer.before.replace('if (__recv(page_server_sk', 'if (recv(page_server_sk');
  const o = await applyPatch(CLOSE_PUSHED, 'close-other', new Map([[xfer.path, other]]));
  assert.match(o.log, /warning: CRIU fix page-server-close-pushed: source differs, not applied/);
  assert.equal(o.after.get(xfer.path), other);
  assert.deepEqual(o.strays, []);
});
