#!/bin/bash
# Stop the manager started by `sd-start.sh NAME` and remove everything it left: its namespaces (all their
# processes die with PID 1), the cgroup directories /NAME in every hierarchy, and the state dir.
# Idempotent: safe to run twice, on a manager that never came up, or after a crash of the test run.
#   SD_KEEP=1   keep $RUN (console.log) for debugging
#   SD_RUNDIR   as for sd-start.sh
# Only processes recorded in $RUN are signalled, by PID, after checking they are still ours.
set -uo pipefail
NAME=${1:?usage: sd-stop.sh NAME}
case "$NAME" in *[!A-Za-z0-9_-]*|'') echo "sd-stop.sh: bad NAME '$NAME'" >&2; exit 2;; esac
RUN=${SD_RUNDIR:-/tmp}/$NAME; CG=/$NAME; CGFS=/sys/fs/cgroup
UPID=$(cat "$RUN/unshare.pid" 2>/dev/null || true)
SPID=$(cat "$RUN/script.pid" 2>/dev/null || true)
SDPID=$(cat "$RUN/systemd.pid" 2>/dev/null || true)
# a PID file may be stale (crash + PID reuse): only trust a PID whose process still refers to $RUN/our NAME
ours() { [ -n "$1" ] && [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' < "/proc/$1/cmdline" | grep -q -- "$2"; }
ours "$UPID" "$RUN/inner.sh" || UPID=""
ours "$SDPID" "--unit=$NAME.target" || SDPID=""
if [ -z "$SDPID" ] && [ -n "$UPID" ]; then SDPID=$(pgrep -P "$UPID" || true); fi
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
if alive "$SDPID"; then
  kill -s SIGRTMIN+14 "$SDPID" 2>/dev/null          # "immediate poweroff": needs no units
  for _ in $(seq 1 200); do alive "$UPID" || alive "$SDPID" || break; sleep 0.025; done
  alive "$SDPID" && kill -9 "$SDPID" 2>/dev/null    # SIGKILL to a pid-ns init kills the whole namespace
fi
for _ in $(seq 1 200); do alive "$UPID" || break; sleep 0.025; done
alive "$UPID" && kill -9 "$UPID" 2>/dev/null
if alive "$SPID" && ours "$SPID" "$RUN/"; then kill "$SPID" 2>/dev/null; fi
# processes still in our subtree (there should be none once the pid namespace is gone): report, and
# kill them, they are ours by construction (only PID 1 of our namespace was ever put into /NAME)
left=$(cat "$CGFS"/systemd"$CG"/cgroup.procs $(find "$CGFS/systemd$CG" -mindepth 1 -name cgroup.procs 2>/dev/null) 2>/dev/null | sort -u)
for p in $left; do echo "sd-stop.sh: killing leftover pid $p in $CG" >&2; kill -9 "$p" 2>/dev/null; done
[ -n "$left" ] && sleep 0.2
rc=0
for d in $(find "$CGFS"/*"$CG" -depth -type d 2>/dev/null); do
  for _ in 1 2 3 4 5 6 7 8 9 10; do rmdir "$d" 2>/dev/null && break; [ -d "$d" ] || break; sleep 0.05; done
  if [ -d "$d" ]; then echo "sd-stop.sh: could not rmdir $d" >&2; rc=1; fi
done
[ "${SD_KEEP:-0}" = 1 ] || rm -rf "$RUN"
exit $rc
