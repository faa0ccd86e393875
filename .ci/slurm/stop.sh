#!/usr/bin/env bash
# Stops the daemons that start.sh started (each node's slurmd, slurmctld, slurmdbd, mariadbd, munged), each by its pid file.
# Idempotent: a daemon that is not running is skipped. State (jobs, accounting DB) is kept for the next start.sh.
# Jobs still running keep their slurmstepd (proctrack/linuxproc); a later start.sh picks them up again.
set -euo pipefail

# stop PIDFILE COMM : TERM, wait up to 30 s, then KILL
stop() {
    local pid
    [[ -r $1 ]] && pid=$(cat "$1" 2>/dev/null) && [[ $pid =~ ^[0-9]+$ ]] || return 0
    if kill -0 "$pid" 2>/dev/null && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]]; then
        kill "$pid"
        for _ in $(seq 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        if kill -0 "$pid" 2>/dev/null; then
            echo "slurm/stop.sh: $2 ($pid) ignored TERM, killing it" >&2
            kill -9 "$pid" 2>/dev/null || true
        fi
        echo "slurm/stop.sh: stopped $2" >&2
    fi
    # munged and mariadbd remove their own pid files; the slurm daemons may not
    rm -f "$1"
}

for pidfile in /run/slurmd.pid /run/slurmd-*.pid; do if [[ -e $pidfile ]]; then stop "$pidfile" slurmd; fi; done
stop /run/slurmctld.pid slurmctld
stop /run/slurmdbd.pid slurmdbd
stop /run/mysqld/mysqld.pid mariadbd
stop /run/munge/munged.pid munged
