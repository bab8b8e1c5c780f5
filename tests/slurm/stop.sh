#!/usr/bin/env bash
# Stop the throwaway cluster started by start.sh STATE_DIR and leave no
# process behind: cancels jobs, shuts down slurmctld/slurmd, kills any
# slurmstepd / job process still carrying this cluster's SLURM_CONF, stops munged.
# Only touches processes found via STATE_DIR's pid files or whose environment
# holds SLURM_CONF=STATE_DIR/slurm.conf.
#
#   stop.sh STATE_DIR
set -uo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 STATE_DIR" >&2
    exit 2
fi
[ -d "$1" ] || { echo "stop.sh: no such directory: $1" >&2; exit 0; }
STATE=$(cd "$1" && pwd -P)
export SLURM_CONF=$STATE/slurm.conf

alive() {  # alive PID: exists and is not a zombie (PID 1 in a container may never reap)
    local line st
    kill -0 "$1" 2>/dev/null || return 1
    { read -r line <"/proc/$1/stat"; } 2>/dev/null || return 1
    st=${line##*) }      # field 3, after "(comm) " (comm may hold spaces)
    st=${st%% *}
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

pid_of() {  # pid_of FILE -> prints the pid if that process is alive
    local p
    [ -s "$1" ] || return 1
    p=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$p" ] && alive "$p" && echo "$p"
}

wait_gone() {  # wait_gone SECONDS PID...
    local t=$1; shift
    local end=$((SECONDS + t)) p left_pids
    while :; do
        left_pids=""
        for p in "$@"; do alive "$p" && left_pids="$left_pids $p"; done
        [ -z "$left_pids" ] && return 0
        [ $SECONDS -ge $end ] && { echo "$left_pids"; return 1; }
        sleep 0.2
    done
}

cluster_pids() {  # processes whose environment names this cluster's slurm.conf
    local d p
    for d in /proc/[0-9]*; do
        p=${d#/proc/}
        [ "$p" = "$$" ] && continue
        [ "$p" = "$BASHPID" ] && continue
        alive "$p" || continue
        if { tr '\0' '\n' <"$d/environ"; } 2>/dev/null | grep -qxF "SLURM_CONF=$SLURM_CONF"; then
            echo "$p"
        fi
    done
}

CTLD=$(pid_of "$STATE/slurmctld.pid" || true)
SLURMD=$(pid_of "$STATE/slurmd.pid" || true)

# 1. cancel every job while the controller is still up, give steps time to end
if [ -n "$CTLD" ] && [ -f "$SLURM_CONF" ]; then
    scancel --partition=debug >/dev/null 2>&1 || true
    end=$((SECONDS + 15))
    while [ $SECONDS -lt $end ]; do
        [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
        sleep 0.5
    done
    # 2. controller tells itself and slurmd to shut down
    scontrol shutdown >/dev/null 2>&1 || true
fi

# 3. wait for the daemons, then TERM/KILL what is left
for p in $CTLD $SLURMD; do
    wait_gone 10 "$p" >/dev/null || kill -TERM "$p" 2>/dev/null
done
for p in $CTLD $SLURMD; do
    wait_gone 5 "$p" >/dev/null || kill -KILL "$p" 2>/dev/null
done

# 4. stray slurmstepd / job tasks (slurmd was started with SLURM_CONF exported,
#    so its slurmstepds and their job tasks inherit it)
left=$(cluster_pids)
if [ -n "$left" ]; then
    kill -TERM $left 2>/dev/null
    left=$(wait_gone 5 $left) || kill -KILL $left 2>/dev/null
fi

# 5. munged
MUNGED=$(pid_of "$STATE/munge/munged.pid" || true)
if [ -n "$MUNGED" ]; then
    kill -TERM "$MUNGED" 2>/dev/null
    wait_gone 5 "$MUNGED" >/dev/null || kill -KILL "$MUNGED" 2>/dev/null
fi

# 6. report
rest=$(cluster_pids)
for f in slurmctld.pid slurmd.pid munge/munged.pid; do
    p=$(pid_of "$STATE/$f" || true)
    [ -n "$p" ] && rest="$rest $p"
done
rest=$(echo $rest)
if [ -n "$rest" ]; then
    echo "stop.sh: still running: $rest" >&2
    exit 1
fi
echo "stop.sh: cluster in $STATE stopped"
