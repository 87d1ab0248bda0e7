/**
 * The shell scripts the deployer runs on hosts (fed to `sh -s`, arguments as `$1`...): POSIX sh,
 * idempotent, printing what they changed. Kept apart from the steps that run them.
 */
import { BundlePaths } from './bundle.js';
import { REMOTE_PATH } from './remote-paths.js';

/**
 * Reads facts; prints `key=value` lines. `$1`: the node the inventory names (or empty); `$2`: the
 * agent's job bridge.
 */
export const FACTS_SCRIPT = `
export PATH=${REMOTE_PATH}:$PATH
echo "uid=$(id -u)"
echo "kernel=$(uname -r)"
echo "arch=$(uname -m)"
echo "os=$( (. /etc/os-release && echo "$PRETTY_NAME") 2>/dev/null || uname -s)"
[ -e /proc/sys/kernel/ns_last_pid ] && echo cr=yes || echo cr=no
cfg=unknown
if [ -r /proc/config.gz ]; then
  if zcat /proc/config.gz 2>/dev/null | grep -q '^CONFIG_CHECKPOINT_RESTORE=y'; then cfg=y; else cfg=n; fi
elif [ -r "/boot/config-$(uname -r)" ]; then
  if grep -q '^CONFIG_CHECKPOINT_RESTORE=y' "/boot/config-$(uname -r)"; then cfg=y; else cfg=n; fi
fi
echo "kconfig=$cfg"
node="$1"; [ -n "$node" ] || node="$(command -v node 2>/dev/null || true)"
if [ -n "$node" ] && [ -x "$node" ]; then echo "node=$node"; echo "node_version=$("$node" --version 2>/dev/null)"; fi
for b in /usr/local/sbin/criu "$(command -v criu 2>/dev/null || true)"; do
  [ -n "$b" ] && [ -x "$b" ] || continue
  echo "criu=$b"
  echo "criu_version=$("$b" --version 2>/dev/null | sed -n 's/^Version: *\\([0-9.]*\\).*/\\1/p' | head -n1)"
  if "$b" check >/dev/null 2>&1; then echo criu_check=ok; else echo criu_check=failed; fi
  break
done
command -v apt-get >/dev/null 2>&1 && echo apt=yes || echo apt=no
[ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1 && echo systemd=yes || echo systemd=no
fz=none
if [ -f /sys/fs/cgroup/cgroup.controllers ] || [ -f /sys/fs/cgroup/unified/cgroup.controllers ]; then fz=v2; fi
if [ "$fz" = none ] && [ -d /sys/fs/cgroup/freezer ]; then fz=v1; fi
echo "freezer=$fz"
echo "pipe_max=$(cat /proc/sys/fs/pipe-max-size 2>/dev/null || echo 0)"
[ -n "$2" ] && [ -d "/sys/class/net/$2/bridge" ] && echo job_bridge=yes || echo job_bridge=no
`;

/**
 * Compare staged files with their targets; install those that differ, keeping the replaced one
 * as `<target>.drover-prev` (an upgrade's rollback puts it back). Args: apply|diff, then triples.
 */
export const FILES_SCRIPT = `
set -eu
umask 077
action="$1"; shift
while [ $# -ge 3 ]; do
  src="$1" mode="$2" dst="$3"; shift 3
  if [ -f "$dst" ] && cmp -s "$src" "$dst" && [ "$(stat -c %a "$dst")" = "$mode" ]; then continue; fi
  [ "$action" = apply ] || { echo "changed $dst"; continue; }
  mkdir -p "$(dirname "$dst")"
  if [ -f "$dst" ]; then cp -p "$dst" "$dst.drover-prev"; else rm -f "$dst.drover-prev"; fi
  install -m "$mode" -o 0 -g 0 "$src" "$dst.drover-new"
  mv -f "$dst.drover-new" "$dst"
  echo "changed $dst"
done
`;

/** Put back (restore) or drop (discard) the `.drover-prev` copies of files. Args: action targets. */
export const PREV_SCRIPT = `
set -eu
action="$1"; shift
for dst in "$@"; do
  if [ "$action" = restore ]; then
    if [ -f "$dst.drover-prev" ]; then mv -f "$dst.drover-prev" "$dst"; else rm -f "$dst"; fi
    echo "restored $dst"
  else
    rm -f "$dst.drover-prev"
  fi
done
`;

/** Unpack a release unless present. Args: root id sha256 tarball. */
export const RELEASE_SCRIPT = `
set -eu
root="$1" id="$2" sha="$3" tarball="$4"
dir="$root/releases/$id"
[ -f "$dir/${BundlePaths.manifest}" ] && { echo present; exit 0; }
echo "$sha  $tarball" | sha256sum -c --status || { echo "bundle checksum mismatch after upload" >&2; exit 3; }
umask 022
mkdir -p "$root/releases"
tmp="$root/releases/.$id.partial"
rm -rf "$tmp"
mkdir "$tmp"
tar -xzf "$tarball" -C "$tmp" --no-same-owner --no-same-permissions
chown -R 0:0 "$tmp"
mv "$tmp" "$dir"
echo installed
`;

/** Point `current` at a release (atomically). Args: root id. */
export const SWITCH_SCRIPT = `
set -eu
root="$1" id="$2"
[ -f "$root/releases/$id/${BundlePaths.manifest}" ] || { echo "release $id is not on this host" >&2; exit 3; }
[ "$(readlink "$root/current" 2>/dev/null || true)" = "releases/$id" ] && { echo unchanged; exit 0; }
ln -sfn "releases/$id" "$root/current.drover-new"
mv -Tf "$root/current.drover-new" "$root/current"
echo switched
`;

/** Create the layout. Args: root. */
export const LAYOUT_SCRIPT = `
set -eu
root="$1"
umask 022
mkdir -p "$root/releases" "$root/run" "$root/log" "$root/etc/tls"
chmod 0755 "$root" "$root/releases" "$root/run"
chmod 0700 "$root/etc" "$root/etc/tls"
chmod 0750 "$root/log"
`;

/** Remove releases other than the ones named. Args: root keep... */
export const PRUNE_SCRIPT = `
set -eu
root="$1"; shift
cd "$root/releases" || exit 0
for d in * .*.partial; do
  [ -e "$d" ] || continue
  case " $* " in *" $d "*) continue ;; esac
  rm -rf -- "$d" && echo "removed $d"
done
`;

/** Processes whose command line or working directory mentions a path. Args: path. */
export const PROCS_SCRIPT = `
p="$1"
for d in /proc/[0-9]*; do
  [ "$d" = "/proc/$$" ] && continue
  c="$(tr '\\0' ' ' < "$d/cmdline" 2>/dev/null || true)"
  w="$(readlink "$d/cwd" 2>/dev/null || true)"
  case "$c $w" in *"$p/"*|*"$p "*) echo "\${d#/proc/} $c" ;; esac
done
`;

/** Remove the agent's files. Args: root unitPath purge stateDir. */
export const REMOVE_SCRIPT = `
set -eu
root="$1" unit="$2" purge="$3" state="$4" cg="$5"
if [ -f "$unit" ] && grep -q "$root/" "$unit"; then
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now "$(basename "$unit")" >/dev/null 2>&1 || true
  fi
  rm -f "$unit"
  if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
  echo "removed $unit"
fi
if [ -e "$root" ]; then rm -rf -- "$root"; echo "removed $root"; fi
# The agent's scratch tmpfs (docs/MIGRATION.md, "Scratch on large folios"), once it holds nothing.
for m in /dev/shm/drover /run/drover; do
  awk -v m="$m" '$1 == "drover-scratch" && $2 == m { f = 1 } END { exit !f }' /proc/self/mounts || continue
  if [ -z "$(ls -A "$m" 2>/dev/null)" ] && umount "$m"; then
    rmdir "$m" 2>/dev/null || true
    echo "removed $m (the scratch tmpfs)"
  else
    echo "kept $m (the scratch tmpfs: in use)"
  fi
done
if [ "$purge" = yes ] && [ -e "$state" ]; then rm -rf -- "$state"; echo "removed $state"; fi
# The agent's cgroups, in the v2 hierarchy and every v1 one: only empty ones go (rmdir).
if [ "$purge" = yes ] && [ -n "$cg" ]; then
  for d in /sys/fs/cgroup/"$cg" /sys/fs/cgroup/*/"$cg"; do
    [ -d "$d" ] || continue
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
    if [ -d "$d" ]; then echo "kept $d (in use)"; else echo "removed $d"; fi
  done
fi
`;
