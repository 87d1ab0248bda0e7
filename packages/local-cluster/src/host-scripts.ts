/**
 * The shell an emulated host is made of: how its init enters cgroups of its own, gets a disk and a
 * sysfs of its own, and how commands join it later.
 */

/** PATH inside hosts; hosts get a clean environment, not the test runner's (NODE_OPTIONS etc.). */
export const HOST_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * Before its namespaces are made, a host's init moves into a cgroup of its own in every
 * hierarchy that allows it (`$1`, e.g. `<runId>-h1`); its cgroup namespace is then rooted there.
 * Each host thus has private job cgroups, as separate machines do, and teardown finds them by
 * the run id. cpuset is skipped (a new v1 cpuset has no CPUs until configured). Where the kernel
 * schedules real-time tasks per cpu cgroup (RT group scheduling: a new group's budget is 0, so
 * no thread in it may take a real-time policy), the host gets a small budget of its own (20 ms a
 * second), as a machine has: the agent's cut timer runs SCHED_FIFO during a cut (best effort).
 */
export const ENTER_OWN_CGROUPS = `
name="$1"; shift
awk '$3 == "cgroup" || $3 == "cgroup2" { print $2 }' /proc/self/mounts | while read -r mp; do
  case "$mp" in */cpuset) continue ;; esac
  mkdir -p "$mp/$name" 2>/dev/null && echo $$ > "$mp/$name/cgroup.procs" 2>/dev/null || true
  [ -e "$mp/$name/cpu.rt_runtime_us" ] && echo 20000 > "$mp/$name/cpu.rt_runtime_us" 2>/dev/null || true
done
exec "$@"
`;

/** Join the host's cgroups (`$1`) from the runner's side, then `exec nsenter "$@"`. */
export const JOIN_HOST_CGROUPS = `
name="$1"; shift
awk '$3 == "cgroup" || $3 == "cgroup2" { print $2 }' /proc/self/mounts | while read -r mp; do
  [ -e "$mp/$name/cgroup.procs" ] && echo $$ > "$mp/$name/cgroup.procs" 2>/dev/null
done
exec nsenter "$@"
`;

/**
 * Inside the host's mount namespace, after its /srv is bound: the host gets a disk of its own.
 * Its /tmp and /dev/shm are private tmpfs, and the testbed's base directory (every run's host
 * directories) is covered by an empty tmpfs, so no path of another host is reachable from this
 * one. Two run paths are bound back at their own paths, as real fleets mount them: the shared
 * directory (`$5`, the NFS emulation, read-write) and the run's PKI (`$6`, read-only: each host's
 * provisioned certificates). They are staged under the private /run first because covering the
 * base directory hides their sources.
 */
export const OWN_DISK =
  'mkdir -p /run/.tb-shared /run/.tb-certs && ' +
  'mount --bind "$5" /run/.tb-shared && mount --bind "$6" /run/.tb-certs && ' +
  'mount -t tmpfs -o mode=1777 tmpfs /tmp && mount -t tmpfs -o mode=1777 tmpfs /dev/shm && ' +
  'mkdir -p "$4" && mount -t tmpfs -o mode=0755 tmpfs "$4" && ' +
  'mkdir -p "$5" "$6" && mount --move /run/.tb-shared "$5" && mount --move /run/.tb-certs "$6" && ' +
  'mount -o remount,bind,ro "$6" && rmdir /run/.tb-shared /run/.tb-certs && ';

/**
 * Inside the host's mount, network and cgroup namespaces: a sysfs of its own (so /sys/class/net
 * lists the host's links, as on a machine: the agents look for their job bridge there), and on it
 * each cgroup hierarchy the machine has, mounted afresh (rooted at the host's own cgroup).
 */
export const REMOUNT_SYS =
  `cg=$(awk '$3 == "cgroup" || $3 == "cgroup2" { print $2, $3, $4 }' /proc/self/mounts) && ` +
  'mount -t sysfs sysfs /sys && mount -t tmpfs -o mode=0755 tmpfs /sys/fs/cgroup && ' +
  `{ echo "$cg" | while read -r mp fs opts; do mkdir -p "$mp" && mount -t "$fs" -o "$opts" "$fs" "$mp" || exit 1; done; } && `;
