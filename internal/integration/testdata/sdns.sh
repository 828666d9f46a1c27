#!/bin/bash
# sdns.sh - run a real systemd (as PID 1) inside private namespaces, for the
# integration test. Each safety step listed below was needed on these machines.
#
#   sdns.sh start DIR        boot systemd; units come ONLY from DIR (+ empty stub
#                            targets); prints the host PID of the namespace's PID 1
#                            on stdout once `systemctl is-system-running` answers.
#   sdns.sh ctl PID ARGS...  run `systemctl ARGS...` inside that instance
#   sdns.sh stop PID         kill -9 exactly that PID 1, clean up its cgroup
#   sdns.sh list             list instances started by this script
#   sdns.sh logs PID         print systemd's console log for that instance
#                            (systemd messages + services' stdout/stderr)
#   sdns.sh verify FILE...   systemd-analyze verify, isolated from the host /run
#
# Safety design (see report): private mount+pid+uts+ipc+cgroup namespaces with
# private propagation; fresh tmpfs /run and /dev (no host device nodes except
# null/zero/full/random/urandom/tty); cgroup2 mounted from a cgroup namespace
# rooted at a dedicated child cgroup; /sys and /proc/sys read-only; the
# container=sdns env so systemd runs its "in a container" code paths; unit
# search path restricted to DIR + stubs (no /lib/systemd/system => no tmpfiles,
# fstab, getty, logind, journald ...); generators disabled; CAP_SYS_BOOT,
# CAP_SYS_TIME, CAP_SYS_MODULE, CAP_AUDIT_CONTROL dropped from the bounding set;
# systemd fully detached (setsid, stdio -> files/dev/null; /dev/console is a
# pty owned by script(1), which logs it to console.log).  Teardown is
# kill -9 of the exact recorded PID (validated by start time + NSpid).
set -u -o pipefail

SDNS_HOME=${SDNS_HOME:-/tmp/sdns}
RUNROOT=$SDNS_HOME/run
SELF=$(readlink -f "${BASH_SOURCE[0]}")
SYSTEMD=${SDNS_SYSTEMD:-/lib/systemd/systemd}
BOOT_TIMEOUT=${SDNS_BOOT_TIMEOUT:-30}     # seconds to wait for is-system-running
CTL_TIMEOUT=${SDNS_CTL_TIMEOUT:-120}      # upper bound for one `ctl` call
LOG_LEVEL=${SDNS_LOG_LEVEL:-info}
MAX_LIFETIME=${SDNS_MAX_LIFETIME:-1800}   # auto-stop safety net, 0 disables
DROP_CAPS=-sys_boot,-sys_time,-sys_module,-audit_control
SAFE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

die() { echo "sdns: $*" >&2; exit 1; }
note() { echo "sdns: $*" >&2; }

# starttime (clock ticks since boot) of a pid, to detect PID reuse
starttime() {
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  s=${s##*) }
  set -- $s
  echo "${20}"
}

write_stubs() {
  local d=$1 t
  for t in sysinit basic sockets timers paths slices local-fs remote-fs \
           network network-online nss-lookup time-sync multi-user \
           shutdown umount final emergency rescue; do
    printf '[Unit]\nDescription=sdns stub %s\nDefaultDependencies=no\n' "$t.target" >"$d/$t.target"
  done
  printf '[Unit]\nDescription=sdns minimal boot target\nDefaultDependencies=no\nAllowIsolate=yes\n' >"$d/sdns.target"
  printf '[Unit]\nDescription=System Slice\nDefaultDependencies=no\n' >"$d/system.slice"
}

# Resolve PID -> run dir, verifying it is still the very process we started.
rundir_of() {
  local pid=$1 rd st
  [[ $pid =~ ^[0-9]+$ ]] || die "bad pid '$pid'"
  rd=$(readlink -f "$RUNROOT/pid-$pid" 2>/dev/null) || true
  [ -n "$rd" ] && [ -d "$rd" ] || die "pid $pid was not started by sdns.sh (no $RUNROOT/pid-$pid)"
  echo "$rd"
}
is_our_live_pid1() {   # rd pid
  local rd=$1 pid=$2 st ns
  st=$(starttime "$pid") || return 1
  [ "$st" = "$(cat "$rd/pid1.starttime")" ] || return 1
  ns=$(awk '/^NSpid:/{print $NF}' "/proc/$pid/status" 2>/dev/null)
  [ "$ns" = 1 ] || return 1
  [ "$(readlink "/proc/$pid/ns/pid")" != "$(readlink /proc/self/ns/pid)" ] || return 1
}

ctl_raw() {  # pid args...   (no validation; used internally)
  local pid=$1; shift
  timeout -k 5 "$CTL_TIMEOUT" nsenter -t "$pid" -m -p -u -i -C -- \
    env -i PATH="$SAFE_PATH" SYSTEMD_PAGER=cat SYSTEMD_COLORS=0 LC_ALL=C \
    systemctl --no-pager "$@"
}

cmd_start() {
  [ $# -eq 1 ] || die "usage: start DIR"
  [ "$(id -u)" = 0 ] || die "must run as root"
  [ -x "$SYSTEMD" ] || die "$SYSTEMD not found"
  local dir cg2 tag rd cg lpid pid1="" upid="" i st state=""
  dir=$(readlink -f "$1") && [ -d "$dir" ] || die "unit dir '$1' does not exist"
  cg2=$(findmnt -n -t cgroup2 -o TARGET | head -n1)
  [ -n "$cg2" ] || die "no cgroup2 hierarchy mounted on the host"
  tag=$(date +%Y%m%d-%H%M%S)-$$-$RANDOM
  rd=$RUNROOT/$tag
  mkdir -p "$rd/stubs" "$rd/empty" || die "cannot create $rd"
  write_stubs "$rd/stubs"
  cg=$cg2/sdns-$tag
  mkdir "$cg" || die "cannot create cgroup $cg"
  echo "$cg" >"$rd/cgroup"
  echo "$dir" >"$rd/unitdir"
  readlink /proc/self/ns/mnt >"$rd/host_mntns"
  # Fully detached launch: new session, stdio to files, so no caller pipe or
  # terminal is ever held by systemd or its children.
  setsid "$SELF" __launch "$rd" </dev/null >"$rd/launch.log" 2>&1 &
  lpid=$!
  for ((i = 0; i < 100; i++)); do           # <= 10 s to find the ns PID 1
    upid=$(cat "$rd/unshare.pid" 2>/dev/null)
    if [ -n "$upid" ]; then
      for pid1 in $(ps -o pid= --ppid "$upid" 2>/dev/null); do
        [ "$(awk '/^NSpid:/{print $NF}' "/proc/$pid1/status" 2>/dev/null)" = 1 ] && break
        pid1=""
      done
      [ -n "$pid1" ] && break
    fi
    kill -0 "$lpid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$pid1" ]; then
    note "failed to launch; launch.log:"; cat "$rd/launch.log" >&2
    rmdir "$cg" 2>/dev/null
    exit 1
  fi
  st=$(starttime "$pid1")
  echo "$pid1" >"$rd/pid1"; echo "$st" >"$rd/pid1.starttime"
  echo "$(starttime "$upid")" >"$rd/unshare.starttime"
  echo "$(starttime "$lpid")" >"$rd/launcher.starttime"
  ln -sfn "$rd" "$RUNROOT/pid-$pid1"
  # safety net: auto-stop after SDNS_MAX_LIFETIME seconds (0 = never); the
  # reaper exits by itself within 1 s once the instance has been stopped
  if [ "$MAX_LIFETIME" -gt 0 ]; then
    setsid bash -c 'end=$((SECONDS + $1)); while [ -e "$3" ] && [ $SECONDS -lt $end ]; do sleep 1; done
                    [ -e "$3" ] && exec "$2" stop "$4"' sdns-reaper \
      "$MAX_LIFETIME" "$SELF" "$RUNROOT/pid-$pid1" "$pid1" </dev/null >>"$rd/reaper.log" 2>&1 &
  fi
  note "namespace PID 1 = host pid $pid1 (run dir $rd)"
  # Bounded wait for systemd to answer.
  for ((i = 0; i < BOOT_TIMEOUT * 5; i++)); do
    if ! kill -0 "$pid1" 2>/dev/null; then
      note "systemd died during boot; console log:"; tail -n 50 "$rd/console.log" >&2
      cmd_stop "$pid1" >/dev/null 2>&1; exit 1
    fi
    state=$(ctl_raw "$pid1" is-system-running 2>/dev/null)
    case $state in running|degraded|maintenance) break ;; esac
    sleep 0.2
  done
  case $state in
    running|degraded|maintenance) note "is-system-running: $state" ;;
    *) note "no answer within ${BOOT_TIMEOUT}s (last: '$state'); console log:"
       tail -n 50 "$rd/console.log" >&2
       cmd_stop "$pid1" >/dev/null 2>&1; exit 1 ;;
  esac
  echo "$pid1"
}

cmd_launch() {   # host side, already in a new session; becomes `script`
  local rd=$1 cg p n
  cg=$(cat "$rd/cgroup")
  # close every inherited fd except stdio (bash keeps its script fd CLOEXEC)
  for p in /proc/$BASHPID/fd/*; do
    n=${p##*/}
    case $n in 0|1|2|255) ;; *) eval "exec $n>&-" 2>/dev/null ;; esac
  done
  # put ourselves into the dedicated cgroup so the new cgroup ns is rooted there
  echo "$BASHPID" >"$cg/cgroup.procs" || exit 1
  echo "$BASHPID" >"$rd/launcher.pid"
  # script(1) gives the namespace a real pty to use as /dev/console (systemd
  # refuses non-tty consoles) and copies everything written to it to
  # console.log; its own stdout copy goes to /dev/null.
  export SDNS_RD=$rd SDNS_SELF=$SELF SHELL=/bin/sh
  exec script -q -f -e -c 'echo $$ >"$SDNS_RD/unshare.pid"; exec unshare --mount --pid --uts --ipc --cgroup --fork --propagation private --mount-proc --kill-child=SIGKILL -- "$SDNS_SELF" __inner "$SDNS_RD"' \
       "$rd/console.log" >/dev/null
}

cmd_inner() {    # runs as PID 1 of the new namespaces, then execs systemd
  local rd=$1 dir n
  set -e
  dir=$(cat "$rd/unitdir")
  # hard safety checks before touching any mount
  [ "$$" = 1 ] || { echo "inner: not pid 1 ($$)"; exit 1; }
  [ "$(readlink /proc/self/ns/mnt)" != "$(cat "$rd/host_mntns")" ] || { echo "inner: in host mount ns"; exit 1; }
  # never let libmount write utab/lock files on the host's /run (it did create
  # an empty /run/mount/ on the host before this was added)
  export LIBMOUNT_UTAB=$rd/utab
  mount -n --make-rprivate /
  # private /run (systemd would mount one anyway; we want it before exec)
  mount -n -t tmpfs -o mode=0755,nosuid,nodev,size=64m sdns-run /run
  # keep the pty that script(1) gave us on stdin: bind it by PATH (the fd's own
  # mount belongs to the host mount ns and cannot be a bind source here)
  [ -t 0 ] || { echo "inner: stdin is not a tty"; exit 1; }
  n=$(readlink /proc/self/fd/0); [[ $n == /dev/pts/* ]] || { echo "inner: odd tty $n"; exit 1; }
  touch /run/.sdns-console; mount -n --bind "$n" /run/.sdns-console
  # private minimal /dev
  mount -n -t tmpfs -o mode=0755,nosuid,size=8m sdns-dev /dev
  mknod -m 0666 /dev/null c 1 3;    mknod -m 0666 /dev/zero c 1 5
  mknod -m 0666 /dev/full c 1 7;    mknod -m 0666 /dev/random c 1 8
  mknod -m 0666 /dev/urandom c 1 9; mknod -m 0666 /dev/tty c 5 0
  mkdir -m 0755 /dev/pts; mkdir -m 1777 /dev/shm
  mount -n -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts /dev/pts
  ln -s pts/ptmx /dev/ptmx
  mount -n -t tmpfs -o mode=1777,nosuid,nodev,size=64m sdns-shm /dev/shm
  ln -s /proc/self/fd /dev/fd
  for n in 0:stdin 1:stdout 2:stderr; do ln -s "/proc/self/fd/${n%%:*}" "/dev/${n#*:}"; done
  # /dev/console = that pty (script(1) copies its output to console.log)
  touch /dev/console; mount -n --move /run/.sdns-console /dev/console; rm -f /run/.sdns-console
  # cgroup: drop the host's v1/hybrid tree (in OUR ns only) and mount cgroup2;
  # we are in a cgroup ns rooted at $cg, so systemd only sees/creates below it.
  umount -n -R -l /sys/fs/cgroup
  mount -n -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup
  # read-only /sys (per-mount flag, not superblock) and /proc/sys
  mount -n -o remount,bind,ro /sys
  for n in /proc/sys /proc/sysrq-trigger; do
    [ -e "$n" ] || continue
    mount -n --bind "$n" "$n"; mount -n -o remount,bind,ro "$n"
  done
  echo "inner: namespace ready, exec systemd"
  exec env -i container=sdns TERM=dumb PATH="$SAFE_PATH" LANG=C.UTF-8 \
    SYSTEMD_UNIT_PATH="$dir:$rd/stubs" \
    SYSTEMD_GENERATOR_PATH="$rd/empty" \
    SYSTEMD_ENVIRONMENT_GENERATOR_PATH="$rd/empty" \
    setpriv --bounding-set "$DROP_CAPS" -- \
    "$SYSTEMD" --system --unit=sdns.target \
      --log-target=console --log-level="$LOG_LEVEL" --log-color=no \
      --show-status=no \
      --default-standard-output=tty --default-standard-error=tty
}

cmd_ctl() {
  [ $# -ge 1 ] || die "usage: ctl PID ARGS..."
  local pid=$1 rd; shift
  rd=$(rundir_of "$pid") || exit 1
  is_our_live_pid1 "$rd" "$pid" || die "pid $pid is not a live sdns instance"
  ctl_raw "$pid" "$@"
}

cmd_stop() {
  [ $# -eq 1 ] || die "usage: stop PID"
  local pid=$1 rd cg upid i
  rd=$(rundir_of "$pid") || exit 1
  if is_our_live_pid1 "$rd" "$pid"; then
    kill -9 "$pid"    # PID 1 of a pid ns ignores SIGTERM; SIGKILL from the parent ns works
    for ((i = 0; i < 100; i++)); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    [ -d "/proc/$pid" ] && note "warning: pid $pid still present after 10s"
  else
    note "pid $pid no longer running (or reused) - cleaning up only"
  fi
  # the unshare parent exits by itself once its child is gone; kill only if it
  # is still exactly the process we recorded
  local what
  for what in unshare launcher; do
    upid=$(cat "$rd/$what.pid" 2>/dev/null)
    [ -n "$upid" ] && [ -s "$rd/$what.starttime" ] || continue
    for ((i = 0; i < 50; i++)); do
      [ "$(starttime "$upid")" = "$(cat "$rd/$what.starttime")" ] || break
      sleep 0.1
    done
    if [ "$(starttime "$upid")" = "$(cat "$rd/$what.starttime")" ]; then
      note "killing leftover $what pid $upid"; kill -9 "$upid"
    fi
  done
  cg=$(cat "$rd/cgroup" 2>/dev/null)
  if [[ $cg == */sdns-* ]] && [ -d "$cg" ]; then
    # anything left in OUR cgroup subtree is ours by construction
    [ -e "$cg/cgroup.kill" ] && echo 1 >"$cg/cgroup.kill" 2>/dev/null
    for ((i = 0; i < 50; i++)); do
      find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
      [ -d "$cg" ] || break
      sleep 0.1
    done
    [ -d "$cg" ] && note "warning: could not remove cgroup $cg"
  fi
  mv -f "$RUNROOT/pid-$pid" "$RUNROOT/stopped-pid-$pid"   # keeps `logs PID` working
  echo stopped >"$rd/state"
  note "stopped $pid"
}

cmd_list() {
  local l pid rd
  for l in "$RUNROOT"/pid-*; do
    [ -e "$l" ] || continue
    pid=${l##*/pid-}; rd=$(readlink -f "$l")
    if is_our_live_pid1 "$rd" "$pid"; then echo "$pid running $rd"; else echo "$pid dead $rd"; fi
  done
}

cmd_verify() {   # systemd-analyze verify in a throwaway mount ns (it touches /run/systemd)
  [ $# -ge 1 ] || die "usage: verify UNITFILE..."
  timeout -k 5 120 unshare --mount --propagation private -- /bin/sh -c \
    'mount -n -t tmpfs sdns-verify-run /run && exec systemd-analyze verify --man=no "$@"' sh "$@"
}

cmd_logs() {
  local rd
  if [ -L "$RUNROOT/pid-${1:-x}" ]; then rd=$(readlink -f "$RUNROOT/pid-$1")
  elif [ -L "$RUNROOT/stopped-pid-${1:-x}" ]; then rd=$(readlink -f "$RUNROOT/stopped-pid-$1")
  else die "unknown pid '${1:-}'"; fi
  tr -d '\r' <"$rd/console.log"
}

mkdir -p "$RUNROOT"
sub=${1:-}; shift || true
case $sub in
  start) cmd_start "$@" ;;
  ctl) cmd_ctl "$@" ;;
  stop) cmd_stop "$@" ;;
  list) cmd_list ;;
  logs) cmd_logs "$@" ;;
  verify) cmd_verify "$@" ;;
  __launch) cmd_launch "$@" ;;
  __inner) cmd_inner "$@" ;;
  *) echo "usage: $0 start DIR | ctl PID ARGS... | stop PID | list | logs PID | verify FILE..." >&2; exit 2 ;;
esac
