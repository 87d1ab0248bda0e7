/**
 * Host setup's fixes to CRIU's source (deploy/setup-host.sh): each applies to the shape it fixes,
 * leaves a source that no longer needs it alone, and never edits a source it does not recognise.
 * The function is taken from the script itself and run on small sources in CRIU's layout.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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
