/**
 * The two shell scripts every job starts under: the namespace init (which becomes tini), and the
 * wrapper under tini that runs the command, names the job's main process in `main-pid`, keeps
 * the job alive as long as `--until` says, and records the exit status. Both are part of what
 * CRIU dumps, so what they keep (the status, the main process) survives every move.
 */
import { JobFiles } from './job-store.js';

/** Exit codes of the init script, each a step that failed (see `describeInitExit`). */
export const InitExit = {
  cgroups: 121,
  hostname: 122,
  cwd: 123,
  network: 124,
  hosts: 125,
  devpts: 126,
} as const;

// Runs as PID 1 of the new namespaces before becoming tini. Why each step:
// - cgroups first, so every process of the job is in them from its first instruction;
// - nsfs mounts (other network namespaces' /run/netns/* entries copied from the host's mount
//   table) are unmounted: they pin foreign namespaces and break a restore once those are gone;
// - a job with its own network waits at a gate (fd 3, a pipe from the agent) until the agent has
//   given its namespace an interface, then closes the gate so nothing of the agent stays open;
// - its /etc/hosts is a file of its job directory (bound in its own mount namespace only);
// - its own devpts instance (`newinstance`), with /dev/ptmx bound to that instance's ptmx: the
//   job's terminals are numbered from 0 in a namespace of their own, so CRIU restores them with
//   their numbers on any host, next to anything else's terminals (the host's devpts copies go
//   first: a devpts under another one is a mount CRIU would have to carry for nothing);
// - stdio is reopened inside the new mount namespace (fds opened outside point at host mounts,
//   which CRIU cannot resolve);
// - tini runs the wrapper (below).
export const INIT_SCRIPT = `
for f in $DROVER_INIT_CGROUPS; do echo 0 > "$f" || exit ${InitExit.cgroups}; done
hostname "$DROVER_INIT_HOSTNAME" || exit ${InitExit.hostname}
awk '$3 == "nsfs" { print $2 }' /proc/self/mounts | xargs -r -n1 umount -l 2>/dev/null
if [ -n "$DROVER_INIT_GATE" ]; then read -r _ <&3 || exit ${InitExit.network}; exec 3<&-; fi
if [ -n "$DROVER_INIT_HOSTS" ]; then mount --bind "$DROVER_INIT_HOSTS" /etc/hosts || exit ${InitExit.hosts}; fi
while umount -l /dev/pts 2>/dev/null; do :; done
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts /dev/pts || exit ${InitExit.devpts}
mount --bind /dev/pts/ptmx /dev/ptmx || exit ${InitExit.devpts}
exec </dev/null >>"$DROVER_JOB_DIR/${JobFiles.stdout}" 2>>"$DROVER_JOB_DIR/${JobFiles.stderr}"
cd "$DROVER_INIT_CWD" || exit ${InitExit.cwd}
unset DROVER_INIT_CGROUPS DROVER_INIT_HOSTNAME DROVER_INIT_CWD DROVER_INIT_GATE DROVER_INIT_HOSTS
exec setsid tini -s -- /bin/sh -c "$DROVER_WRAPPER" drover-job "$@"
`;

/** argv[0] of the wrapper: how `signal` tells it from the job's own processes. */
export const WRAPPER_NAME = 'drover-job';

// The job's own environment reaches only its command: the helpers before it (unshare, the
// init, hostname, awk, umount, mount, tini, the wrapper, the relay) run with the agent's fixed
// environment, so a job's LD_PRELOAD, PATH or BASH_ENV cannot run code in them (unshare runs
// outside the job's namespaces and cgroups). The variables travel as DROVER_JOB_ENV_<name> and
// are exported in the shell that execs the command. Names are checked against
// ENV_NAME_PATTERN, so eval is safe.
const EXPORT_JOB_ENV = `for DROVER_N_ in $DROVER_JOB_ENV_NAMES; do eval "DROVER_V_=\\$DROVER_JOB_ENV_$DROVER_N_"; unset "DROVER_JOB_ENV_$DROVER_N_"; eval "export $DROVER_N_=\\"\\$DROVER_V_\\""; done; unset DROVER_N_ DROVER_V_ DROVER_JOB_ENV_NAMES DROVER_WRAPPER DROVER_TTY_RELAY`;

/** Write `$1` (a PID inside the job, or nothing) as the job's main process, atomically. */
const MAIN_FILE = `"$DROVER_JOB_DIR/${JobFiles.mainPid}"`;
const SET_MAIN = `printf '%s\\n' "$1" >${MAIN_FILE}.tmp && mv -f ${MAIN_FILE}.tmp ${MAIN_FILE}`;
/** The process running this names itself the main process (before the job's PATH applies). */
const SET_MAIN_SELF = `read -r DROVER_ME_ _ </proc/self/stat; printf '%s\\n' "$DROVER_ME_" >${MAIN_FILE}.tmp && mv -f ${MAIN_FILE}.tmp ${MAIN_FILE}; unset DROVER_ME_`;

/**
 * The terminal relay of a job run with `-t` (`python3 -I -c RELAY TTYCMD NAME`): it opens a pty
 * in the job's own devpts, runs `sh -c TTYCMD NAME` on it (NAME: the wrapper's, so the shell's
 * errors read as the wrapper's and job-start.ts knows it for the wrapper's until it execs the
 * command) as that session's controlling terminal, copies
 * the terminal's output to its stdout (the job's log) and its stdin (the job's input FIFO) to
 * the terminal, and exits with the command's status (128 + the signal that killed it, as a shell
 * says) once the command is gone and its output is drained (for at most 2 s: a background
 * process that keeps the terminal and writes on does not hold the job). Not util-linux's
 * `script`: its poll loop gives up on the EINTR that CRIU's dump and restore cause and then
 * SIGTERMs the command (measured here); Python retries interrupted calls itself (PEP 475).
 * Input waits in `pending` while the terminal is full, so a command that does not read never
 * stops its own output from reaching the log. The wait-status macros, not
 * `os.waitstatus_to_exitcode`, so any python3 >= 3.5 runs it.
 */
export const TTY_RELAY = `
import os, pty, select, sys, time
pid, m = pty.fork()
if pid == 0:
    os.execv('/bin/sh', ['sh', '-c', sys.argv[1], sys.argv[2]])
os.set_blocking(m, False)
status = None
gone_at = None
pending = b''
stdin_open = True
while True:
    rd = [m] + ([0] if stdin_open and not pending else [])
    r, w, _ = select.select(rd, [m] if pending else [], [], 0.2)
    if m in r:
        try:
            d = os.read(m, 65536)
        except BlockingIOError:
            d = None
        except OSError:
            d = b''
        if d == b'':
            break
        while d:
            d = d[os.write(1, d):]
    if 0 in r:
        pending = os.read(0, 65536)
        stdin_open = pending != b''
    if m in w:
        try:
            pending = pending[os.write(m, pending):]
        except BlockingIOError:
            pass
    if status is None:
        p, s = os.waitpid(pid, os.WNOHANG)
        if p == pid:
            status, gone_at = s, time.monotonic()
    if status is not None and (m not in r or time.monotonic() - gone_at > 2):
        break
if status is None:
    status = os.waitpid(pid, 0)[1]
sys.exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
`;

// The wrapper: `sh -c WRAPPER drover-job UNTIL PIDFILE TTYCMD CMD...`. Why each step:
// - the command's own process names itself in main-pid before it execs the command: that PID
//   (inside the job, which CRIU keeps) is how the agent finds the main process after a restore,
//   whatever order the restored children come back in;
// - with a terminal (TTYCMD), the relay above gives the command a pty of the job's own devpts
//   as its controlling terminal and copies its output to stdout.log; it reads the job's input
//   FIFO (opened read-write, so it never sees an end of file);
// - with a pidfile (as systemd's Type=forking): once the command exits 0, the PID it wrote there
//   (up to 10 s later) is the main process until it ends; the exit status is then 0 (a daemon is
//   tini's child, not ours: its own status cannot be known), or 1 if no live PID came;
// - main-pid is emptied once the main process is gone: a PID reused later is never taken for it;
// - until=all: the job lives on while any process but tini and this wrapper is left.
export const WRAPPER = `
u=$1 pf=$2 tc=$3; shift 3
main() { ${SET_MAIN}; }
others() { for p in /proc/[0-9]*; do p=\${p#/proc/}; [ "$p" = 1 ] || [ "$p" = "$$" ] || return 0; done; return 1; }
if [ -n "$tc" ]; then
  rm -f "$DROVER_JOB_DIR/${JobFiles.ttyIn}"
  mkfifo -m 600 "$DROVER_JOB_DIR/${JobFiles.ttyIn}" && exec 0<>"$DROVER_JOB_DIR/${JobFiles.ttyIn}" || exit 127
  python3 -I -c "$DROVER_TTY_RELAY" "$tc" "$0"; st=$?
else
  (${SET_MAIN_SELF}; ${EXPORT_JOB_ENV}; exec "$@"); st=$?
fi
if [ -n "$pf" ] && [ "$st" = 0 ]; then
  n=0 pid=
  while [ "$n" -lt 100 ]; do
    pid=; read -r pid _ <"$pf" 2>/dev/null
    case "$pid" in ''|*[!0-9]*|1|"$$") pid= ;; esac
    [ -n "$pid" ] && [ -d "/proc/$pid" ] && break
    pid= n=$((n + 1)); sleep 0.1
  done
  if [ -n "$pid" ]; then main "$pid"; while [ -d "/proc/$pid" ]; do sleep 1; done
  else echo "drover: no live process named in $pf after the command exited" >&2; st=1; fi
fi
main ''
if [ "$u" = all ]; then while others; do sleep 1; done; fi
printf '%s\\n' "$st" >"$DROVER_JOB_DIR/${JobFiles.exitStatus}.tmp" && mv -f "$DROVER_JOB_DIR/${JobFiles.exitStatus}.tmp" "$DROVER_JOB_DIR/${JobFiles.exitStatus}"
exit $st
`;

/** `arg` single-quoted for sh: any byte but NUL survives. */
export function shQuote(arg: string): string {
  return `'${arg.replaceAll("'", `'\\''`)}'`;
}

/** What the wrapper needs besides the command. */
export interface WrapperSpec {
  until: 'main' | 'all';
  mainPidfile: string | null;
  tty: boolean;
}

/** The wrapper's arguments after its name: UNTIL PIDFILE TTYCMD CMD... */
export function wrapperArgs(spec: WrapperSpec, command: readonly string[]): string[] {
  const tty = spec.tty
    ? `${SET_MAIN_SELF}; ${EXPORT_JOB_ENV}; exec ${command.map(shQuote).join(' ')}`
    : '';
  return [spec.until, spec.mainPidfile ?? '', tty, ...command];
}

/** Why the init script exited with `code`, for the error `run` reports. */
export function describeInitExit(code: number | null, cwd: string, stderrPath: string): string {
  switch (code) {
    case InitExit.cgroups:
      return 'could not join the job cgroups';
    case InitExit.hostname:
      return 'could not set the hostname';
    case InitExit.cwd:
      return `working directory ${cwd} does not exist`;
    case InitExit.network:
      return 'its network was not set up';
    case InitExit.hosts:
      return 'could not bind its /etc/hosts';
    case InitExit.devpts:
      return 'could not mount its own devpts (/dev/pts, /dev/ptmx)';
    case null:
      return 'tini did not start in time (is tini installed? run deploy/setup-host.sh)';
    default:
      return `the launcher exited with ${code} (see ${stderrPath})`;
  }
}
