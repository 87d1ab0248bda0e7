#!/usr/bin/env bash
# Prepares one Linux host for Drover: Debian packages, a CRIU >= 4.2 built with every feature the
# machine can have (libbpf, GnuTLS, nftables), a nats-server >= 2.12, kernel knobs.
#
# Idempotent: a second run checks and changes nothing (a few seconds). Used by the README quick
# start, .ci/run, `drover up` and the SSH deployer. Must run as root.
#
# Where the machine's own Debian suite is too old (Debian 12: CRIU 3.17, nats-server 2.9.10; Debian
# 13: CRIU 4.1, nats-server 2.10), the newest Debian package is taken from unstable through a
# private apt configuration under $SID_DIR (its own sources list, lists and cache): the machine's
# apt sources and lists are never touched. CRIU is built from its source package; nats-server is
# the binary package, unpacked (its only dependency is libc6 >= 2.34).
#
# Environment:
#   DROVER_CRIU_MIN       minimum CRIU version (default 4.2.0)
#   DROVER_NATS_MIN       minimum nats-server version (default 2.12.0)
#   DROVER_BUILD_DIR      where the CRIU source is built (default /var/cache/drover/criu-build)
#   DROVER_SKIP_PACKAGES  set to 1 to skip the apt step (hosts provisioned another way)
#   DROVER_TEST_TOOLS     set to 1 to add what the test suites need beyond a host's runtime
#                         (Debian's chromium for the web console's browser tests); CI sets it
set -euo pipefail

CRIU_MIN="${DROVER_CRIU_MIN:-4.2.0}"
NATS_MIN="${DROVER_NATS_MIN:-2.12.0}"
BUILD_DIR="${DROVER_BUILD_DIR:-/var/cache/drover/criu-build}"
SID_DIR=/var/cache/drover/apt-sid
NATS_BIN=/usr/local/sbin/nats-server
PIPE_MAX_SIZE=4194304
export DEBIAN_FRONTEND=noninteractive

log() { printf 'setup-host: %s\n' "$*" >&2; }
die() { printf 'setup-host: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (try: sudo $0)"
command -v apt-get >/dev/null || die "this script supports Debian-based hosts only (no apt-get)"

# Runtime packages: job and testbed init, sshd for the deployer tests, the workloads' redis, the
# tools the agent and testbed call (arping: jobs' address probes and announces; tcpdump: the
# suites' checks that no page crosses the wire in plaintext; python3: the terminal relay of jobs
# run with -t, and the test workloads), and what apt needs to fetch from unstable. nats-server
# is ensure_nats's business (the suite's may be too old).
RUNTIME_PKGS=(tini openssh-server redis-server iproute2 iputils-arping util-linux procps psmisc
  iptables nftables kmod ca-certificates xz-utils debian-archive-keyring openssl tcpdump python3)
# Only for the test suites (DROVER_TEST_TOOLS=1): a headless browser for the console's tests,
# Debian's own (no test tool may download a browser).
TEST_PKGS=(chromium)
# CRIU's build dependencies (Debian 12 names; identical on 13). Each optional feature CRIU detects
# at build time has its -dev package here: libbpf (BPF maps), GnuTLS (page-server TLS), nftables
# (the network lock).
CRIU_BUILD_PKGS=(build-essential pkg-config libprotobuf-dev libprotobuf-c-dev protobuf-c-compiler
  protobuf-compiler python3-protobuf libbsd-dev libcap-dev libnl-3-dev libnet1-dev libaio-dev
  libgnutls28-dev libnftables-dev libbpf-dev uuid-dev dpkg-dev)
# CRIU's optional features: the library the binary links when built with it, and its pkg-config name.
CRIU_FEATURES=("libbpf:libbpf" "libgnutls:gnutls" "libnftables:libnftables")

apt_updated=0
apt_update() {
  if [ "$apt_updated" = 0 ]; then
    log "apt-get update"
    apt-get update -qq >/dev/null
    apt_updated=1
  fi
}

missing_pkgs() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || printf '%s\n' "$p"
  done
}

install_pkgs() {
  local missing
  mapfile -t missing < <(missing_pkgs "$@")
  if [ "${#missing[@]}" -gt 0 ]; then
    apt_update
    log "installing: ${missing[*]}"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# version_ge A B: true when dotted version A >= B.
version_ge() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$2" ]; }

criu_version() {
  local bin="$1"
  "$bin" --version 2>/dev/null | sed -n 's/^Version: *\([0-9.]*\).*/\1/p' | head -n1
}

# A criu that is new enough and whose `criu check` passes, or nothing.
usable_criu() {
  local bin v
  for bin in /usr/local/sbin/criu "$(command -v criu 2>/dev/null || true)"; do
    [ -n "$bin" ] && [ -x "$bin" ] || continue
    v="$(criu_version "$bin")"
    [ -n "$v" ] && version_ge "$v" "$CRIU_MIN" || continue
    "$bin" check >/dev/null 2>&1 || continue
    printf '%s\n' "$bin"
    return 0
  done
  return 1
}

# The optional features a criu binary was built without although their library can be built
# against here (pkg-config finds it): printed one per line.
criu_missing_features() {
  local bin="$1" f lib pc linked
  linked="$(ldd "$bin" 2>/dev/null || true)"
  for f in "${CRIU_FEATURES[@]}"; do
    lib="${f%%:*}" pc="${f#*:}"
    if ! grep -q "$lib\.so" <<<"$linked" && pkg-config --exists "$pc" 2>/dev/null; then
      printf '%s\n' "$pc"
    fi
  done
}

# The Debian archive this machine already uses (never a hard-coded host).
debian_mirror() {
  apt-get indextargets --format '$(ORIGIN) $(REPO_URI) $(RELEASE)' 2>/dev/null |
    awk '$1 == "Debian" && $3 !~ /-(security|updates|backports)$/ { print $2; exit }'
}

# apt-get against unstable only, through a private configuration under $SID_DIR: its own sources
# list, lists and cache. The machine's sources, lists and installed packages are left alone.
sid_updated=0
sid_apt() {
  apt-get -o Dir::Etc::SourceList="$SID_DIR/sources.list" -o Dir::Etc::SourceParts=/dev/null \
    -o Dir::State::Lists="$SID_DIR/lists" -o Dir::Cache="$SID_DIR/cache" \
    -o APT::Sandbox::User=root "$@"
}
sid_update() {
  [ "$sid_updated" = 0 ] || return 0
  local mirror
  mirror="$(debian_mirror)"
  [ -n "$mirror" ] || die "cannot find this machine's Debian archive in its apt sources"
  mkdir -p "$SID_DIR/lists/partial" "$SID_DIR/cache/archives/partial"
  printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s sid main\ndeb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s sid main\n' \
    "$mirror" "$mirror" >"$SID_DIR/sources.list"
  log "apt-get update (unstable, private lists in $SID_DIR)"
  sid_apt update -qq >/dev/null
  sid_updated=1
}

# The version apt would install of package $1 from the machine's suites, or nothing.
suite_candidate() {
  apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: *\([0-9][0-9.]*\).*/\1/p'
}

# Drover's fixes to CRIU's source, applied before it is built. Raise CRIU_FIXES_REV when one is
# added: a build recorded with an older revision (in CRIU_FIXES_STAMP, and in the source tree) is
# rebuilt by the next setup.
CRIU_FIXES_REV=4
CRIU_FIXES_STAMP=/usr/local/lib/drover/criu-fixes

# tls-recv-frees-packets. CRIU's tls_recv_data_to_fd (criu/tls.c, 4.2.1 and upstream as of this
# writing) frees only the last GnuTLS packet of each call and keeps the others: a page server
# receiving over TLS grows its heap by about three quarters of the bytes it receives, and faulting
# that memory in costs it more CPU than the cipher (docs/MIGRATION.md, "Its rate": 6.4-7.5 CPU-s
# per GiB, 1.6 with this fix). Each packet is freed once written. Applied only where the function
# still has that shape; prints what it did.
fix_criu_tls_recv_frees_packets() {
  local file="$1/criu/tls.c" out rc
  out="$(mktemp)"
  awk '
    /^int tls_recv_data_to_fd\(/ { inside = 1 }
    inside && /gnutls_packet_deinit\(packet\);/ { deinits++ }
    inside && /^\tgnutls_packet_t packet;$/ { print "\tgnutls_packet_t packet = NULL;"; declared = 1; next }
    inside && /^\t\tlen -= pdata\.size;$/ {
      print; print "\t\tgnutls_packet_deinit(packet);"; print "\t\tpacket = NULL;"; freed = 1; next
    }
    inside && /^}/ { inside = 0 }
    { print }
    END {
      if (deinits > 1) exit 3        # already frees each packet (fixed upstream)
      if (!(declared && freed)) exit 4
    }' "$file" >"$out" && rc=0 || rc=$?
  case $rc in
    0) mv "$out" "$file"; log "CRIU fix tls-recv-frees-packets: applied" ;;
    3) rm -f "$out"; log "CRIU fix tls-recv-frees-packets: not needed (the source frees each packet)" ;;
    *) rm -f "$out"; log "warning: CRIU fix tls-recv-frees-packets: source differs, not applied" ;;
  esac
}

# tls-batched-io. Over TLS both CRIUs make a few system calls per 16 KiB GnuTLS record, and on a
# VM a system call costs more than the cipher: the dumping side one send() per record, the page
# server a poll() and a splice() per 64 KiB of its pipe and, per record, two recv() and a write()
# (docs/MIGRATION.md, "How CRIU batches"). With this patch the records of one 400 KiB read leave in
# one send(), the page server reads the socket 256 KiB ahead, writes up to 16 records with one
# writev() into a pipe grown to 1 MiB, and no longer polls before a blocking read: for 1 GiB, about
# 71,000 system calls on the dumping side become 8,700 and 237,000 in the page server 10,500.
# It changes criu/tls.c and criu/page-xfer.c as they are after tls-recv-frees-packets, so it
# follows that fix (apply_criu_patch, below).
criu_tls_batched_io_patch() {
  cat <<'PATCH'
--- a/criu/page-xfer.c
+++ b/criu/page-xfer.c
@@ -1103,17 +1103,21 @@
 		 * the non-blocking splice we need to explicitly wait.
 		 */
 
-		if (sk_wait_data(sk) < 0) {
-			pr_perror("Can't poll socket");
-			return -1;
-		}
-
 		if (opts.tls) {
+			/*
+			 * A blocking read: no wait needed, and records read
+			 * ahead by an earlier call are not visible to poll().
+			 */
 			if (tls_recv_data_to_fd(cxfer.p[1], chunk)) {
 				pr_err("Can't read from socket\n");
 				return -1;
 			}
 		} else {
+			if (sk_wait_data(sk) < 0) {
+				pr_perror("Can't poll socket");
+				return -1;
+			}
+
 			chunk = splice(sk, NULL, cxfer.p[1], NULL, chunk, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
 
 			if (chunk < 0) {
@@ -1204,6 +1208,13 @@
 			return -1;
 		}
 
+		/*
+		 * Over TLS each unit of the pipe costs a splice into the
+		 * image: take pages in units of up to 1 MiB, not 64 KiB.
+		 */
+		if (opts.tls && fcntl(cxfer.p[0], F_SETPIPE_SZ, 1 << 20) < 0)
+			pr_debug("Can't grow the xfer pipe: %m\n");
+
 		cxfer.pipe_size = fcntl(cxfer.p[0], F_GETPIPE_SZ, 0);
 		pr_debug("Created xfer pipe size %u\n", cxfer.pipe_size);
 	} else {
--- a/criu/tls.c
+++ b/criu/tls.c
@@ -1,6 +1,9 @@
 #include <unistd.h>
+#include <string.h>
+#include <errno.h>
 #include <sys/types.h>
 #include <sys/socket.h>
+#include <sys/uio.h>
 #include <linux/limits.h>
 
 #include <gnutls/gnutls.h>
@@ -31,6 +34,30 @@
 static int tls_sk = -1;
 static int tls_sk_flags = 0;
 
+/*
+ * Page data goes through GnuTLS in 16 KiB records. Sent one push (send) and
+ * pulled with two recv() each, a record costs the kernel more than the cipher
+ * does. While tls_send_data_from_fd() encrypts one read's worth of records, the
+ * push callback gathers them into tls_wbatch and they leave in one send(); while
+ * tls_recv_data_to_fd() decrypts, the pull callback reads the socket ahead into
+ * tls_rahead, TLS_READ_AHEAD_SZ at a time. Bytes read ahead are served to GnuTLS
+ * first by every later pull, so they are never lost, but poll() on the socket
+ * does not see them: the page server does not poll it before receiving pages.
+ */
+#define TLS_READ_AHEAD_SZ (256 << 10)
+
+static struct {
+	char *buf;
+	size_t len, cap;
+	bool on;
+} tls_wbatch;
+
+static struct {
+	char *buf;
+	size_t off, len;
+	bool on;
+} tls_rahead;
+
 void tls_terminate_session(bool async)
 {
 	int ret;
@@ -52,6 +79,11 @@
 
 	tls_sk = -1;
 
+	xfree(tls_wbatch.buf);
+	memset(&tls_wbatch, 0, sizeof(tls_wbatch));
+	xfree(tls_rahead.buf);
+	memset(&tls_rahead, 0, sizeof(tls_rahead));
+
 	/* Free the credentials object */
 	if (x509_cred)
 		gnutls_certificate_free_credentials(x509_cred);
@@ -86,6 +118,26 @@
 	return ret;
 }
 
+/* Sends the records gathered in tls_wbatch; the socket is blocking. */
+static int tls_wbatch_flush(void)
+{
+	size_t off = 0;
+
+	while (off < tls_wbatch.len) {
+		ssize_t ret = send(tls_sk, tls_wbatch.buf + off, tls_wbatch.len - off, 0);
+		if (ret < 0) {
+			if (errno == EINTR)
+				continue;
+			pr_perror("Can't send TLS records");
+			tls_wbatch.len = 0;
+			return -1;
+		}
+		off += ret;
+	}
+	tls_wbatch.len = 0;
+	return 0;
+}
+
 /*
  * Read data from a file descriptor, then encrypt and send it with GnuTLS.
  * This function is used for cases when we would otherwise use splice()
@@ -109,13 +161,19 @@
 			goto err;
 		}
 
+		tls_wbatch.on = true;
 		for (sent = 0; sent < copied; sent += ret) {
 			ret = tls_send((buf + sent), (copied - sent), 0);
 			if (ret < 0) {
 				tls_perror("Failed sending data", ret);
+				tls_wbatch.on = false;
+				tls_wbatch.len = 0;
 				goto err;
 			}
 		}
+		tls_wbatch.on = false;
+		if (tls_wbatch_flush())
+			goto err;
 		len -= copied;
 	}
 err:
@@ -159,20 +217,51 @@
 	return ret;
 }
 
+/* Writes out iov[0..n), whatever the partial writes; 0 or -1. */
+static int tls_writev_all(int fd, struct iovec *iov, int n)
+{
+	while (n > 0) {
+		ssize_t ret = writev(fd, iov, n);
+
+		if (ret < 0) {
+			if (errno == EINTR)
+				continue;
+			pr_perror("Failed writing to fd");
+			return -1;
+		}
+		while (n > 0 && ret >= (ssize_t)iov->iov_len) {
+			ret -= iov->iov_len;
+			iov++;
+			n--;
+		}
+		if (n > 0) {
+			iov->iov_base += ret;
+			iov->iov_len -= ret;
+		}
+	}
+	return 0;
+}
+
 /*
  * Read and decrypt data with GnuTLS, then write it to a file descriptor.
  * This function is used for cases when we would otherwise use splice()
- * to transfer data from a TCP socket to a PIPE.
+ * to transfer data from a TCP socket to a PIPE. Up to TLS_RECV_BATCH
+ * records are kept and go out in one writev().
  */
+#define TLS_RECV_BATCH 16
+
 int tls_recv_data_to_fd(int fd, unsigned long len)
 {
-	gnutls_packet_t packet = NULL;
+	gnutls_packet_t packets[TLS_RECV_BATCH];
+	struct iovec iov[TLS_RECV_BATCH];
+	int i, n = 0, err = 0;
 
+	tls_rahead.on = true;
 	while (len > 0) {
-		ssize_t ret, w;
+		ssize_t ret;
 		gnutls_datum_t pdata;
 
-		ret = gnutls_record_recv_packet(session, &packet);
+		ret = gnutls_record_recv_packet(session, &packets[n]);
 		if (ret == 0) {
 			pr_info("Connection closed by peer\n");
 			break;
@@ -181,21 +270,25 @@
 			break;
 		}
 
-		gnutls_packet_get(packet, &pdata, NULL);
-		for (w = 0; w < pdata.size; w += ret) {
-			ret = write(fd, (pdata.data + w), (pdata.size - w));
-			if (ret < 0) {
-				pr_perror("Failed writing to fd");
-				goto err;
-			}
-		}
+		gnutls_packet_get(packets[n], &pdata, NULL);
+		iov[n].iov_base = pdata.data;
+		iov[n].iov_len = pdata.size;
+		n++;
 		len -= pdata.size;
-		gnutls_packet_deinit(packet);
-		packet = NULL;
+
+		if (n == TLS_RECV_BATCH || len == 0) {
+			err = tls_writev_all(fd, iov, n);
+			for (i = 0; i < n; i++)
+				gnutls_packet_deinit(packets[i]);
+			n = 0;
+			if (err)
+				break;
+		}
 	}
-err:
-	gnutls_packet_deinit(packet);
-	return (len > 0);
+	tls_rahead.on = false;
+	for (i = 0; i < n; i++)
+		gnutls_packet_deinit(packets[i]);
+	return err || (len > 0);
 }
 
 static inline void tls_handshake_verification_status_print(int ret, unsigned status)
@@ -315,7 +408,26 @@
 static ssize_t _tls_push_cb(void *p, const void *data, size_t sz)
 {
 	int fd = *(int *)(p);
-	ssize_t ret = send(fd, data, sz, tls_sk_flags);
+	ssize_t ret;
+
+	if (tls_wbatch.on) {
+		if (tls_wbatch.len + sz > tls_wbatch.cap) {
+			size_t cap = max(2 * tls_wbatch.cap, tls_wbatch.len + sz);
+			char *nbuf = xrealloc(tls_wbatch.buf, cap);
+
+			if (!nbuf) {
+				errno = ENOMEM;
+				return -1;
+			}
+			tls_wbatch.buf = nbuf;
+			tls_wbatch.cap = cap;
+		}
+		memcpy(tls_wbatch.buf + tls_wbatch.len, data, sz);
+		tls_wbatch.len += sz;
+		return sz;
+	}
+
+	ret = send(fd, data, sz, tls_sk_flags);
 	if (ret < 0 && errno != EAGAIN) {
 		int _errno = errno;
 		pr_perror("Push callback send failed");
@@ -332,7 +444,35 @@
 static ssize_t _tls_pull_cb(void *p, void *data, size_t sz)
 {
 	int fd = *(int *)(p);
-	ssize_t ret = recv(fd, data, sz, tls_sk_flags);
+	ssize_t ret;
+
+	if (tls_rahead.on && tls_rahead.off == tls_rahead.len && sz < TLS_READ_AHEAD_SZ) {
+		if (!tls_rahead.buf) {
+			tls_rahead.buf = xmalloc(TLS_READ_AHEAD_SZ);
+			if (!tls_rahead.buf) {
+				errno = ENOMEM;
+				return -1;
+			}
+		}
+		/* Whatever has arrived, up to the buffer: never wait for more. */
+		ret = recv(fd, tls_rahead.buf, TLS_READ_AHEAD_SZ, tls_sk_flags & ~MSG_WAITALL);
+		if (ret <= 0)
+			goto out;
+		tls_rahead.off = 0;
+		tls_rahead.len = ret;
+	}
+
+	/* Bytes read ahead go first. */
+	if (tls_rahead.off < tls_rahead.len) {
+		size_t n = min(sz, tls_rahead.len - tls_rahead.off);
+
+		memcpy(data, tls_rahead.buf + tls_rahead.off, n);
+		tls_rahead.off += n;
+		return n;
+	}
+
+	ret = recv(fd, data, sz, tls_sk_flags);
+out:
 	if (ret < 0 && errno != EAGAIN) {
 		int _errno = errno;
 		pr_perror("Pull callback recv failed");
PATCH
}

# page-server-close-pushed. The dumping CRIU corks its page connection (TCP_CORK) and pushes
# each command it waits on with TCP_NODELAY, except the last: disconnect_from_page_server (4.2.1
# and upstream as of this writing) sends PS_IOV_CLOSE and waits for the page server's answer
# while the command, and the tail of the last pages, sit in the cork until its 200 ms timer.
# Every dump to a page server, TLS or not, ended 200-210 ms after its last page left (criu dump of
# 64 MiB to a page server on loopback: 360 ms, 148 ms with this fix; to tmpfs: 139 ms). The
# command is pushed like the others. Applied like tls-batched-io, and independent of it.
criu_page_server_close_pushed_patch() {
  cat <<'PATCH'
--- a/criu/page-xfer.c
+++ b/criu/page-xfer.c
@@ -1541,6 +1541,9 @@
 	if (send_psi(page_server_sk, &pi))
 		goto out;
 
+	/* Push the command NOW: corked, it would wait for the cork's 200 ms timer */
+	tcp_nodelay(page_server_sk, true);
+
 	if (__recv(page_server_sk, &status, sizeof(status), 0) != sizeof(status)) {
 		pr_perror("The page server doesn't answer");
 		goto out;
PATCH
}

# tls-handshake-nodelay. CRIU's TLS handshake (tls_x509_init, criu/tls.c; 4.2.1 and upstream as of
# this writing) runs on a socket with Nagle's algorithm on, and each flight of the handshake is
# several small records sent one call each: the second waits for the peer's ACK of the first,
# which the peer delays. A dump's connection to its page server (and the lazy-pages daemon's)
# took 43-50 ms to shake hands in 6 of 8 runs on this VM, 1.5-3 ms with this fix, every time -
# and the job is frozen meanwhile (docs/MIGRATION.md, "The handshake's 40 ms"). The handshake
# runs with TCP_NODELAY, and the socket is given back as it was. Applied like tls-batched-io.
criu_tls_handshake_nodelay_patch() {
  cat <<'PATCH'
--- a/criu/tls.c
+++ b/criu/tls.c
@@ -4,6 +4,8 @@
 #include <sys/types.h>
 #include <sys/socket.h>
 #include <sys/uio.h>
+#include <netinet/in.h>
+#include <netinet/tcp.h>
 #include <linux/limits.h>
 
 #include <gnutls/gnutls.h>
@@ -524,12 +526,40 @@
 	return 0;
 }
 
+/*
+ * The handshake's flights are several small records, each sent by its own call: with Nagle's
+ * algorithm on, the second waits for the peer's ACK of the first, which the peer delays (40 ms
+ * or more). Send them at once, then give the socket back as it was.
+ */
+static int tls_nodelay_begin(int sk)
+{
+	int on = 0, one = 1;
+	socklen_t len = sizeof(on);
+
+	if (getsockopt(sk, SOL_TCP, TCP_NODELAY, &on, &len) || on)
+		return -1;
+	if (setsockopt(sk, SOL_TCP, TCP_NODELAY, &one, sizeof(one)))
+		return -1;
+	return 0;
+}
+
+static void tls_nodelay_end(int sk, int was)
+{
+	int zero = 0;
+
+	if (was == 0 && setsockopt(sk, SOL_TCP, TCP_NODELAY, &zero, sizeof(zero)))
+		pr_pwarn("Unable to set TCP_NODELAY=0");
+}
+
 int tls_x509_init(int sockfd, bool is_server)
 {
+	int nodelay;
+
 	if (!opts.tls)
 		return 0;
 
 	tls_sk = sockfd;
+	nodelay = tls_nodelay_begin(sockfd);
 	if (tls_x509_setup_creds())
 		goto err;
 	if (tls_x509_setup_session(is_server ? GNUTLS_SERVER : GNUTLS_CLIENT))
@@ -539,8 +569,10 @@
 	if (tls_x509_verify_peer_cert())
 		goto err;
 
+	tls_nodelay_end(sockfd, nodelay);
 	return 0;
 err:
+	tls_nodelay_end(sockfd, nodelay);
 	tls_terminate_session(true);
 	return -1;
 }
PATCH
}

# Apply fix $1, the patch its function $2 prints, to the source tree $3: only where every hunk
# matches exactly (patch, which dpkg-dev brings); prints what it did.
apply_criu_patch() {
  local name="$1" patch_fn="$2"
  local p=(patch -d "$3" -p1 --fuzz=0 --batch --silent --no-backup-if-mismatch -r -)
  if "$patch_fn" | "${p[@]}" --forward --dry-run >/dev/null 2>&1; then
    "$patch_fn" | "${p[@]}" --forward >/dev/null ||
      die "CRIU fix $name: patch failed after its dry run"
    log "CRIU fix $name: applied"
  elif "$patch_fn" | "${p[@]}" --reverse --dry-run >/dev/null 2>&1; then
    log "CRIU fix $name: not needed (the source has it)"
  else
    log "warning: CRIU fix $name: source differs, not applied"
  fi
}

apply_criu_fixes() {
  fix_criu_tls_recv_frees_packets "$1"
  apply_criu_patch tls-batched-io criu_tls_batched_io_patch "$1"
  apply_criu_patch page-server-close-pushed criu_page_server_close_pushed_patch "$1"
  apply_criu_patch tls-handshake-nodelay criu_tls_handshake_nodelay_patch "$1"
  printf '%s\n' "$CRIU_FIXES_REV" >"$1/.drover-fixes"
}

# True when the CRIU at /usr/local/sbin was built by this setup with its current fixes.
criu_fixes_current() { [ "$(cat "$CRIU_FIXES_STAMP" 2>/dev/null)" = "$CRIU_FIXES_REV" ]; }

build_criu_from_sid() {
  local srcdir tarball
  install_pkgs "${CRIU_BUILD_PKGS[@]}"
  mkdir -p "$BUILD_DIR"
  cd "$BUILD_DIR"
  tarball="$(ls -1 criu_*.orig.tar.* 2>/dev/null | sort -V | tail -n1 || true)"
  if [ -z "$tarball" ]; then
    sid_update
    log "fetching CRIU's newest Debian source package"
    # The .debian.tar part may be missing on the mirror; the upstream tarball is all we build.
    sid_apt source --download-only -qq criu >/dev/null 2>&1 || true
    tarball="$(ls -1 criu_*.orig.tar.* 2>/dev/null | sort -V | tail -n1 || true)"
  fi
  [ -n "$tarball" ] || die "apt-get source criu fetched no upstream tarball"
  local v="${tarball#criu_}"
  v="${v%%.orig.tar.*}"
  version_ge "$v" "$CRIU_MIN" || die "newest Debian CRIU source is $v, need >= $CRIU_MIN"
  srcdir="$BUILD_DIR/criu-$v"
  # A tree built before a feature's -dev package was installed lacks that feature, one built
  # before a fix was added lacks the fix: build afresh.
  if [ ! -x "$srcdir/criu/criu" ] || [ -n "$(criu_missing_features "$srcdir/criu/criu")" ] ||
    [ "$(cat "$srcdir/.drover-fixes" 2>/dev/null)" != "$CRIU_FIXES_REV" ]; then
    rm -rf "$srcdir"
    tar -xf "$tarball"
    [ -d "$srcdir" ] || die "unexpected layout in $tarball (no criu-$v/)"
    apply_criu_fixes "$srcdir"
    log "building CRIU $v (about 20 s)"
    make -C "$srcdir" -j"$(nproc)" criu >"$BUILD_DIR/build.log" 2>&1 ||
      { tail -n 30 "$BUILD_DIR/build.log" >&2; die "CRIU build failed (log: $BUILD_DIR/build.log)"; }
  fi
  local missing
  missing="$(criu_missing_features "$srcdir/criu/criu" | tr '\n' ' ')"
  [ -z "$missing" ] || die "CRIU $v was built without: $missing(log: $BUILD_DIR/build.log)"
  install -D -m 0755 "$srcdir/criu/criu" /usr/local/sbin/criu
  install -D -m 0644 "$srcdir/.drover-fixes" "$CRIU_FIXES_STAMP"
  log "installed CRIU $v at /usr/local/sbin/criu (libbpf, GnuTLS, nftables; Drover's fixes rev $CRIU_FIXES_REV)"
}

ensure_criu() {
  local bin cand missing
  if bin="$(usable_criu)"; then
    if [ "$bin" = /usr/local/sbin/criu ]; then
      # Our own build: it must have every feature whose library exists for this machine.
      install_pkgs "${CRIU_BUILD_PKGS[@]}"
      missing="$(criu_missing_features "$bin" | tr '\n' ' ')"
      if [ -n "$missing" ]; then
        log "$bin was built without: $missing- rebuilding"
      elif ! criu_fixes_current; then
        log "$bin was built without Drover's current CRIU fixes (rev $CRIU_FIXES_REV) - rebuilding"
      fi
      if [ -n "$missing" ] || ! criu_fixes_current; then
        build_criu_from_sid
        bin="$(usable_criu)" || die "no criu >= $CRIU_MIN passes 'criu check' after rebuilding"
      fi
    fi
    log "criu ok: $bin ($(criu_version "$bin"))"
    return
  fi
  apt_update
  cand="$(suite_candidate criu)"
  if [ -n "$cand" ] && version_ge "$cand" "$CRIU_MIN"; then
    log "installing Debian's criu $cand"
    apt-get install -y -qq --no-install-recommends criu >/dev/null
  else
    build_criu_from_sid
  fi
  bin="$(usable_criu)" || die "no criu >= $CRIU_MIN passes 'criu check' after installing"
  # Make sure the PATH finds the good one first (Debian's /usr/sbin/criu may be older).
  if [ "$(command -v criu)" != "$bin" ] && [ "$bin" = /usr/local/sbin/criu ]; then
    log "note: $(command -v criu) shadows /usr/local/sbin/criu on this PATH"
  fi
  log "criu ok: $bin ($(criu_version "$bin"))"
}

nats_version() {
  "$1" --version 2>/dev/null | sed -n 's/^nats-server: *v\{0,1\}\([0-9][0-9.]*\).*/\1/p' | head -n1
}

# A nats-server that is new enough, or nothing: ours in /usr/local/sbin first, then the PATH's.
usable_nats() {
  local bin v
  for bin in "$NATS_BIN" "$(command -v nats-server 2>/dev/null || true)"; do
    [ -n "$bin" ] && [ -x "$bin" ] || continue
    v="$(nats_version "$bin")"
    [ -n "$v" ] && version_ge "$v" "$NATS_MIN" || continue
    printf '%s\n' "$bin"
    return 0
  done
  return 1
}

# nats-server >= NATS_MIN: the suite's package if it is new enough, else unstable's binary
# package unpacked into $NATS_BIN (the suite's older one, if installed, stays where it is).
ensure_nats() {
  local bin cand deb tmp
  if bin="$(usable_nats)"; then
    log "nats-server ok: $bin ($(nats_version "$bin"))"
    return
  fi
  apt_update
  cand="$(suite_candidate nats-server)"
  if [ -n "$cand" ] && version_ge "$cand" "$NATS_MIN"; then
    log "installing Debian's nats-server $cand"
    apt-get install -y -qq --no-install-recommends nats-server >/dev/null
  else
    sid_update
    cand="$(sid_apt_policy_candidate nats-server)"
    [ -n "$cand" ] && version_ge "$cand" "$NATS_MIN" ||
      die "Debian unstable's nats-server is ${cand:-missing}, need >= $NATS_MIN"
    log "fetching nats-server $cand (Debian unstable's binary package)"
    rm -f "$SID_DIR"/nats-server_*.deb
    (cd "$SID_DIR" && sid_apt download -qq "nats-server=$(sid_full_version nats-server)" >/dev/null) ||
      die "apt-get download nats-server failed"
    deb="$(ls -1 "$SID_DIR"/nats-server_*.deb | head -n1)"
    tmp="$(mktemp -d)"
    dpkg-deb -x "$deb" "$tmp"
    install -D -m 0755 "$tmp/usr/sbin/nats-server" "$NATS_BIN"
    rm -rf "$tmp" "$deb"
  fi
  bin="$(usable_nats)" || die "no nats-server >= $NATS_MIN after installing"
  if [ "$(command -v nats-server)" != "$bin" ]; then
    log "note: $(command -v nats-server) shadows $bin on this PATH"
  fi
  log "nats-server ok: $bin ($(nats_version "$bin"))"
}

# Unstable's candidate of package $1: its upstream version (for comparing), and the full Debian
# version with any epoch (for apt-get download).
sid_apt_policy_candidate() {
  sid_full_version "$1" | sed -n 's/^\([0-9]*:\)\{0,1\}\([0-9][0-9.]*\).*/\2/p'
}
sid_full_version() {
  sid_apt_cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: *\([^ ]*\).*/\1/p' |
    grep -v '^(none)$' || true
}
sid_apt_cache() {
  apt-cache -o Dir::Etc::SourceList="$SID_DIR/sources.list" -o Dir::Etc::SourceParts=/dev/null \
    -o Dir::State::Lists="$SID_DIR/lists" -o Dir::Cache="$SID_DIR/cache" "$@"
}

ensure_sysctls() {
  # CRIU lazy pages grow a pipe to 4 MiB; without CAP_SYS_RESOURCE that needs the system limit.
  local cur
  cur="$(cat /proc/sys/fs/pipe-max-size)"
  if [ "$cur" -lt "$PIPE_MAX_SIZE" ]; then
    log "fs.pipe-max-size $cur -> $PIPE_MAX_SIZE"
    echo "$PIPE_MAX_SIZE" >/proc/sys/fs/pipe-max-size
  fi
  local conf=/etc/sysctl.d/90-drover.conf
  if [ ! -f "$conf" ]; then
    printf '# Drover: CRIU lazy pages need pipes of 4 MiB.\nfs.pipe-max-size = %s\n' "$PIPE_MAX_SIZE" >"$conf"
  fi
}

main() {
  local t0=$SECONDS
  if [ "${DROVER_SKIP_PACKAGES:-0}" != 1 ]; then
    install_pkgs "${RUNTIME_PKGS[@]}"
    if [ "${DROVER_TEST_TOOLS:-0}" = 1 ]; then
      install_pkgs "${TEST_PKGS[@]}"
    fi
  fi
  ensure_criu
  ensure_nats
  ensure_sysctls
  log "done in $((SECONDS - t0)) s"
}

main "$@"
