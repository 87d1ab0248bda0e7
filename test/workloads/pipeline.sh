#!/bin/bash
# Pipeline workload: producer | filter | consumer (three Python processes over pipes) under this shell,
# which relays SIGUSR1/SIGUSR2 to the consumer; the consumer checks the sequence and writes the verdict.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=/usr/bin/python3
stage="$here/lib/pipeline-stage.py"
dir=''
seed=1
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    *) extra+=("$1"); shift ;;
  esac
done
[ -n "$dir" ] || { echo 'pipeline.sh: --dir <workdir> is required' >&2; exit 2; }

# Traps first: the consumer may announce `ready` before this shell would otherwise get to them, and
# an untrapped SIGUSR1 would kill it. Ending the consumer ends the others through SIGPIPE.
consumer=''
relay() { [ -n "$consumer" ] && kill "-$1" "$consumer"; }
trap 'relay USR1' USR1
trap 'relay USR2' USR2
trap 'relay TERM || exit 143' TERM INT

"$py" "$stage" producer --dir "$dir" --seed "$seed" |
  "$py" "$stage" filter --dir "$dir" --seed "$seed" |
  "$py" "$stage" consumer --dir "$dir" --seed "$seed" --root-pid $$ "${extra[@]}" &
consumer=$!

# `wait` returns early whenever a trapped signal arrives, so loop until the consumer is really gone.
while kill -0 "$consumer" 2>/dev/null; do
  wait "$consumer"
done
