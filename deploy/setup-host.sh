#!/usr/bin/env bash
# Prepares one Linux host for Drover: Debian packages, a CRIU >= 4.2 on the PATH, kernel knobs.
#
# Idempotent: a second run checks and changes nothing (a few seconds). Used by the README quick
# start, .ci/run, `drover up` and the SSH deployer. Must run as root.
#
# Environment:
#   DROVER_CRIU_MIN       minimum CRIU version (default 4.2.0)
#   DROVER_BUILD_DIR      where the CRIU source is built (default /var/cache/drover/criu-build)
#   DROVER_SKIP_PACKAGES  set to 1 to skip the apt step (hosts provisioned another way)
#   DROVER_TEST_TOOLS     set to 1 to add what the test suites need beyond a host's runtime
#                         (Debian's chromium for the web console's browser tests); CI sets it
set -euo pipefail

CRIU_MIN="${DROVER_CRIU_MIN:-4.2.0}"
BUILD_DIR="${DROVER_BUILD_DIR:-/var/cache/drover/criu-build}"
PIPE_MAX_SIZE=4194304
export DEBIAN_FRONTEND=noninteractive

log() { printf 'setup-host: %s\n' "$*" >&2; }
die() { printf 'setup-host: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (try: sudo $0)"
command -v apt-get >/dev/null || die "this script supports Debian-based hosts only (no apt-get)"

# Runtime packages: job and testbed init, NATS, sshd for the deployer tests, the workloads'
# redis, and the tools the agent and testbed call (arping: jobs' address probes and announces;
# tcpdump: the suites' checks that no page crosses the wire in plaintext).
RUNTIME_PKGS=(tini nats-server openssh-server redis-server iproute2 util-linux procps psmisc
  iptables nftables kmod ca-certificates xz-utils iputils-arping openssl tcpdump)
# Only for the test suites (DROVER_TEST_TOOLS=1): a headless browser for the console's tests,
# Debian's own (no test tool may download a browser).
TEST_PKGS=(chromium)
# CRIU's build dependencies (Debian 12 names; identical on 13).
CRIU_BUILD_PKGS=(build-essential pkg-config libprotobuf-dev libprotobuf-c-dev protobuf-c-compiler
  protobuf-compiler python3-protobuf libbsd-dev libcap-dev libnl-3-dev libnet1-dev libaio-dev
  libgnutls28-dev libnftables-dev uuid-dev dpkg-dev)

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

# The Debian archive this machine already uses (never a hard-coded host).
debian_mirror() {
  apt-get indextargets --format '$(ORIGIN) $(REPO_URI) $(RELEASE)' 2>/dev/null |
    awk '$1 == "Debian" && $3 !~ /-(security|updates|backports)$/ { print $2; exit }'
}

build_criu_from_sid() {
  local mirror srcdir tarball
  install_pkgs "${CRIU_BUILD_PKGS[@]}"
  apt_update
  mirror="$(debian_mirror)"
  [ -n "$mirror" ] || die "cannot find this machine's Debian archive in its apt sources"
  # A deb-src entry for unstable only: it adds source packages, never binaries.
  local list=/etc/apt/sources.list.d/drover-criu-src.list
  if [ ! -f "$list" ]; then
    log "adding a deb-src entry for unstable (source packages only)"
    printf 'deb-src %s sid main\n' "$mirror" >"$list"
    apt_updated=0
  fi
  apt_update
  mkdir -p "$BUILD_DIR"
  cd "$BUILD_DIR"
  tarball="$(ls -1 criu_*.orig.tar.* 2>/dev/null | sort -V | tail -n1 || true)"
  if [ -z "$tarball" ]; then
    log "fetching CRIU's newest Debian source package"
    # The .debian.tar part may be missing on the mirror; the upstream tarball is all we build.
    apt-get source --download-only -qq criu >/dev/null 2>&1 || true
    tarball="$(ls -1 criu_*.orig.tar.* 2>/dev/null | sort -V | tail -n1 || true)"
  fi
  [ -n "$tarball" ] || die "apt-get source criu fetched no upstream tarball"
  local v="${tarball#criu_}"
  v="${v%%.orig.tar.*}"
  version_ge "$v" "$CRIU_MIN" || die "newest Debian CRIU source is $v, need >= $CRIU_MIN"
  srcdir="$BUILD_DIR/criu-$v"
  if [ ! -x "$srcdir/criu/criu" ]; then
    rm -rf "$srcdir"
    tar -xf "$tarball"
    [ -d "$srcdir" ] || die "unexpected layout in $tarball (no criu-$v/)"
    log "building CRIU $v (about 20 s)"
    make -C "$srcdir" -j"$(nproc)" criu >"$BUILD_DIR/build.log" 2>&1 ||
      { tail -n 30 "$BUILD_DIR/build.log" >&2; die "CRIU build failed (log: $BUILD_DIR/build.log)"; }
  fi
  install -D -m 0755 "$srcdir/criu/criu" /usr/local/sbin/criu
  log "installed CRIU $v at /usr/local/sbin/criu"
}

ensure_criu() {
  local bin cand
  if bin="$(usable_criu)"; then
    log "criu ok: $bin ($(criu_version "$bin"))"
    return
  fi
  apt_update
  cand="$(apt-cache policy criu 2>/dev/null | sed -n 's/^ *Candidate: *\([0-9.]*\).*/\1/p')"
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
  ensure_sysctls
  log "done in $((SECONDS - t0)) s"
}

main "$@"
