#!/bin/bash
# Start a throw-away systemd system manager as PID 1 of new pid/mount/uts/ipc namespaces, for tests.
#
# Usage: sd-start.sh NAME        prints the host PID of that systemd (also in $RUN/systemd.pid)
# Env:   SD_NETNS=<ip netns name>  run the manager (hence every unit it starts) in that network namespace
#        SD_NET_CLS=1              mount a cgroup v1 net_cls hierarchy at /sys/fs/cgroup/net_cls, visible only
#                                  inside the manager's mount namespace (from the host: /proc/PID/root/sys/fs/cgroup)
#        SD_OWNER=<pid>            process that owns this manager (pytest); a later run may clean up the
#                                  manager when that process is gone (see sd-stop.sh)
#        SD_RUNDIR=<dir>           parent of the state dir (default /tmp); state dir is $SD_RUNDIR/NAME
#
# What it touches outside its own namespaces, and nothing else (sd-stop.sh removes all of it):
#   * the cgroup directory /NAME in each hierarchy (only PID 1 of the new namespace is moved there, so
#     systemd takes /NAME as its root and never sees or moves host processes);
#   * $SD_RUNDIR/NAME (unit files, wrappers, console log, pid files).
# Inside, systemd gets a private tmpfs on /sys/fs/cgroup (it remounts that read-only and creates symlinks;
# the superblock of the host's tmpfs would otherwise be changed), /proc/sys read-only (no host sysctls),
# placeholder mounts where it would otherwise create new *global* v1 hierarchies, and a sealed unit path.
set -euo pipefail
NAME=${1:?usage: sd-start.sh NAME}
case "$NAME" in *[!A-Za-z0-9_-]*|'') echo "sd-start.sh: bad NAME '$NAME'" >&2; exit 2;; esac
RUN=${SD_RUNDIR:-/tmp}/$NAME
CG=/$NAME
CGFS=/sys/fs/cgroup
if [ "$(stat -f -c %T "$CGFS")" != tmpfs ] || [ ! -d "$CGFS/systemd" ]; then
  # the recipe needs the hybrid/legacy layout (tmpfs with v1 hierarchies + name=systemd), as on the
  # CI machines; a pure cgroup2 host would need a different one (not written: nothing to test it on)
  echo "sd-start.sh: $CGFS is not a hybrid/legacy cgroup layout" >&2; exit 3
fi
V1=""                                   # v1 controller hierarchies mounted on this host, by directory name
for d in "$CGFS"/*; do
  [ -d "$d" ] || continue
  b=${d##*/}
  case "$b" in systemd|unified) continue;; esac
  [ -L "$d" ] && continue               # cpu -> cpu,cpuacct style symlinks
  if [ "$(stat -f -c %T "$d")" = cgroupfs ] && [ -e "$d/cgroup.procs" ]; then V1="$V1 $b"; fi
done
if [ -s "$RUN/systemd.pid" ] && kill -0 "$(cat "$RUN/systemd.pid")" 2>/dev/null; then
  echo "sd-start.sh: manager $NAME already running (pid $(cat "$RUN/systemd.pid")); run sd-stop.sh $NAME" >&2
  exit 1
fi
rm -rf "$RUN"; mkdir -p "$RUN/units" "$RUN/bin"
echo "${SD_OWNER:-$PPID}" > "$RUN/owner.pid"

# 1. Hermetic unit path: only these units exist (no udev/journald/sysctl/timesyncd/getty ...).
printf '[Unit]\nDescription=%s test target\n' "$NAME" > "$RUN/units/$NAME.target"
for t in sysinit basic shutdown; do        # what DefaultDependencies= of a transient service pulls in
  printf '[Unit]\nDescription=%s (stub)\nDefaultDependencies=no\n' "$t" > "$RUN/units/$t.target"
done

# 2. Our subtree in every hierarchy systemd will use (it uses a v1 controller only if <ctrl>/NAME exists).
V2=""
if [ -e "$CGFS/unified/cgroup.procs" ]; then V2=unified; fi
for h in systemd $V2 $V1; do mkdir -p "$CGFS/$h$CG"; done

# 3. Runs as PID 1 of the new namespaces: private /sys/fs/cgroup, then exec systemd.
NETCLS=""
if [ "${SD_NET_CLS:-0}" = 1 ]; then
  # net_cls may only be mounted with the option set it already has (kernel rule): try alone, then with net_prio
  NETCLS='mkdir /sys/fs/cgroup/net_cls
mount -t cgroup -o net_cls net_cls /sys/fs/cgroup/net_cls 2>/dev/null || mount -t cgroup -o net_cls,net_prio net_cls /sys/fs/cgroup/net_cls'
fi
cat > "$RUN/inner.sh" <<INNER
set -e
echo \$\$ > $CGFS/systemd$CG/cgroup.procs
if [ -n "$V2" ]; then echo \$\$ > $CGFS/unified$CG/cgroup.procs; fi
mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys
mount -t tmpfs -o mode=755,size=1m $NAME-cgroup /sys/fs/cgroup
for c in $V1; do mkdir /sys/fs/cgroup/\$c; mount -t cgroup -o \$c cgroup /sys/fs/cgroup/\$c; done
mkdir /sys/fs/cgroup/systemd; mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
if [ -n "$V2" ]; then mkdir /sys/fs/cgroup/unified; mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified; fi
$NETCLS
# placeholders: systemd skips a path that is a mount point, so it creates no new global v1 hierarchy
for p in cpu,cpuacct net_cls,net_prio net_cls net_prio perf_event hugetlb rdma misc; do
  [ -e /sys/fs/cgroup/\$p ] && continue
  mkdir /sys/fs/cgroup/\$p; mount -t tmpfs -o size=4k,mode=555 none /sys/fs/cgroup/\$p
done
mount --bind "\$(tty)" /dev/console
exec env -i container=$NAME SYSTEMD_UNIT_PATH=$RUN/units PATH=/usr/sbin:/usr/bin:/sbin:/bin \\
     /lib/systemd/systemd --system --unit=$NAME.target --log-target=console --log-level=info --show-status=no
INNER

NS=()
if [ -n "${SD_NETNS:-}" ]; then
  [ -e "/run/netns/$SD_NETNS" ] || { echo "sd-start.sh: no netns $SD_NETNS" >&2; exit 1; }
  NS=(nsenter "--net=/run/netns/$SD_NETNS")     # not `ip netns exec`: it remounts /sys (empty /sys/fs/cgroup)
fi
# script(1) gives the manager a pty as /dev/console and copies everything it prints to console.log
setsid "${NS[@]}" script -qfec "/bin/sh -c 'echo \$\$ > $RUN/unshare.pid; exec unshare --pid --fork --mount --mount-proc --uts --ipc --propagation private /bin/sh $RUN/inner.sh'" \
   "$RUN/console.log" </dev/null >/dev/null 2>&1 &
echo $! > "$RUN/script.pid"

# 4. Wait until the manager answers on its private bus (0.25 s idle, >1 s under load).
for _ in $(seq 1 600); do
  if [ -s "$RUN/unshare.pid" ]; then
    SDPID=$(pgrep -P "$(cat "$RUN/unshare.pid")" || true)
    if [ -n "$SDPID" ]; then
      st=$(nsenter -t "$SDPID" -m -p systemctl is-system-running 2>/dev/null || true)
      case "$st" in running|degraded)
        echo "$SDPID" > "$RUN/systemd.pid"
        # host code can call the tools unchanged with PATH=$RUN/bin:$PATH
        for c in systemctl systemd-run; do
          printf '#!/bin/sh\nexec nsenter -t %s -m -p -- /usr/bin/%s "$@"\n' "$SDPID" "$c" > "$RUN/bin/$c"
          chmod +x "$RUN/bin/$c"
        done
        echo "$SDPID"; exit 0;;
      esac
    fi
  fi
  if ! kill -0 "$(cat "$RUN/script.pid")" 2>/dev/null; then break; fi
  sleep 0.025
done
echo "sd-start.sh: systemd $NAME did not come up; console log:" >&2
cat "$RUN/console.log" >&2 2>/dev/null || true
"$(dirname "$0")/sd-stop.sh" "$NAME" >&2 || true
exit 1
