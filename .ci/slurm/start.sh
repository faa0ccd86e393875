#!/usr/bin/env bash
# A real SLURM cluster with accounting (slurmctld + slurmd + slurmdbd on MariaDB, munge auth) for CI, on Debian 12
# as root, without systemd. Idempotent: installs what is missing, (re)writes the configs, starts the daemons that
# are not running (restarts those whose config changed), registers cluster `ci` and account `mssr` (root belongs
# to it), and waits until the nodes are idle and sacct answers. Prints one line with the seconds taken.
# Two nodes on this one host, each its own slurmd (`slurmd -N NAME`, own port, spool and pid file): `$HOST` and
# `$HOST-b`, so a job over 2 nodes runs for real (one task per node, SLURM_NODEID 0 and 1, both names resolving
# to this host). Each node offers the whole machine. Partitions: debug (default) and other, both over both nodes.
# Stop with stop.sh beside it.
# Logs: /var/log/slurm/{slurmctld,slurmd-<node>,slurmdbd,mariadb}.log, /var/log/munge/munged.log.
set -euo pipefail

T0=$(date +%s%N)
CLUSTER=ci
ACCOUNT=mssr
DBUSER=slurm
DBPASS=slurm-ci            # local-only DB user on a throwaway CI machine
LOGDIR=/var/log/slurm
PKGS=(munge slurm-client slurmctld slurmd slurmdbd mariadb-server mariadb-client)

say() { echo "slurm/start.sh: $*" >&2; }
die() {
    say "ERROR: $*"
    for f in "$LOGDIR"/*.log /var/log/munge/munged.log; do [[ -s $f ]] && { echo "--- tail $f" >&2; tail -n 15 "$f" >&2; }; done
    exit 1
}
# run a command quietly; show its output only when it fails
quiet() {
    local out
    if ! out=$("$@" 2>&1); then echo "$out" >&2; say "failed: $*"; return 1; fi
}
# wait_for SECONDS DESCRIPTION CMD... : poll CMD every 0.25 s
wait_for() {
    local limit=$1 what=$2 end; shift 2
    end=$(( $(date +%s) + limit ))
    until "$@" >/dev/null 2>&1; do
        (( $(date +%s) < end )) || die "timed out after ${limit}s waiting for $what"
        sleep 0.25
    done
}
# running PIDFILE COMM : the process in PIDFILE is alive and is COMM
running() {
    local pid
    [[ -r $1 ]] && pid=$(cat "$1" 2>/dev/null) && [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
        [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]]
}
# install_file SRC DEST MODE OWNER : install when different; returns 0 when it changed DEST
install_file() {
    if [[ -f $2 ]] && cmp -s "$1" "$2" && [[ $(stat -c '%a %U' "$2") == "$3 ${4%%:*}" ]]; then
        rm -f "$1"; return 1
    fi
    install -m "$3" -o "${4%%:*}" -g "${4##*:}" "$1" "$2"; rm -f "$1"; return 0
}

[[ $(id -u) -eq 0 ]] || { say "must run as root"; exit 1; }

# --- packages --------------------------------------------------------------------------------------------------
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    # keep the packages' maintainer scripts from starting services (there is no init system to manage them)
    made_policy=
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; made_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    rc=0
    { quiet apt-get update -q && quiet apt-get install -y -q --no-install-recommends "${missing[@]}"; } || rc=$?
    [[ -n $made_policy ]] && rm -f /usr/sbin/policy-rc.d
    ((rc == 0)) || die "apt-get failed"
fi

# --- host names ------------------------------------------------------------------------------------------------
HOST=$(hostname); HOST=${HOST%%.*}
NODES=("$HOST" "$HOST-b")   # node names; both daemons run here (a job's first host must resolve on every node)
PORTS=(6818 6828)           # slurmd ports, one per node (6819 is slurmdbd's)
for name in "${NODES[@]}"; do
    if ! getent hosts "$name" >/dev/null; then
        say "adding $name to /etc/hosts"
        [[ -s /etc/hosts && $(tail -c1 /etc/hosts) != "" ]] && echo >>/etc/hosts   # file ends without a newline
        echo "127.0.0.1 $name" >>/etc/hosts
    fi
done

# --- directories -----------------------------------------------------------------------------------------------
mkdir -p /etc/slurm /var/spool/slurmctld "${NODES[@]/#//var/spool/slurmd/}" "$LOGDIR" /run/munge /run/mysqld /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 755 /run/munge
chown mysql:mysql /run/mysqld

# --- munge -----------------------------------------------------------------------------------------------------
if [[ ! -s /etc/munge/munge.key ]]; then
    say "creating /etc/munge/munge.key"
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then mungekey --create --force --keyfile=/etc/munge/munge.key
    else dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
fi
chown munge:munge /etc/munge /etc/munge/munge.key
chmod 700 /etc/munge; chmod 400 /etc/munge/munge.key
if ! { munge -n </dev/null | unmunge; } >/dev/null 2>&1; then
    # --force: go ahead over a socket or pid file left by a munged that died
    runuser -u munge -- /usr/sbin/munged --force --log-file=/var/log/munge/munged.log \
        --pid-file=/run/munge/munged.pid --socket=/run/munge/munge.socket.2
    wait_for 15 munged sh -c 'munge -n </dev/null | unmunge'
fi

# --- MariaDB ---------------------------------------------------------------------------------------------------
if [[ ! -d /var/lib/mysql/mysql ]]; then
    quiet mariadb-install-db --user=mysql --datadir=/var/lib/mysql --auth-root-authentication-method=socket
fi
if ! mariadb-admin --protocol=socket ping >/dev/null 2>&1; then
    setsid /usr/sbin/mariadbd --user=mysql --pid-file=/run/mysqld/mysqld.pid --socket=/run/mysqld/mysqld.sock \
        --innodb-lock-wait-timeout=900 </dev/null >>"$LOGDIR/mariadb.log" 2>&1 &
    wait_for 60 mariadb mariadb-admin --protocol=socket ping
fi
quiet mariadb --protocol=socket -e "
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS '$DBUSER'@'localhost' IDENTIFIED BY '$DBPASS';
ALTER USER '$DBUSER'@'localhost' IDENTIFIED BY '$DBPASS';
GRANT ALL PRIVILEGES ON slurm_acct_db.* TO '$DBUSER'@'localhost';
FLUSH PRIVILEGES;"

# --- configs ---------------------------------------------------------------------------------------------------
NODELINE=$(slurmd -C | grep -m1 '^NodeName=') || die "slurmd -C printed no NodeName line"
HARDWARE=${NODELINE#NodeName=* }   # CPUs=... RealMemory=...: what each node offers
NODELINES=""
for i in "${!NODES[@]}"; do
    NODELINES+="NodeName=${NODES[$i]} NodeHostname=$HOST Port=${PORTS[$i]} $HARDWARE State=UNKNOWN"$'\n'
done

tmp=$(mktemp)
cat >"$tmp" <<EOF
# written by .ci/slurm/start.sh
AuthType=auth/munge
ArchiveEvents=no
DbdHost=localhost
DbdPort=6819
SlurmUser=root
PidFile=/run/slurmdbd.pid
LogFile=$LOGDIR/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$DBUSER
StoragePass=$DBPASS
StorageLoc=slurm_acct_db
EOF
dbd_changed=; install_file "$tmp" /etc/slurm/slurmdbd.conf 600 root:root && dbd_changed=1

tmp=$(mktemp)
cat >"$tmp" <<EOF
# written by .ci/slurm/start.sh: two nodes on one host, accounting through slurmdbd, no cgroups
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=2
JobRequeue=1
ReturnToService=2
InactiveLimit=0
KillWait=10
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd/%n
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageEnforce=associations
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
${NODELINES}PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=other Nodes=ALL Default=NO MaxTime=INFINITE State=UP
EOF
conf_changed=; install_file "$tmp" /etc/slurm/slurm.conf 644 root:root && conf_changed=1

# stop_pid PIDFILE COMM : stop a daemon of ours (for a restart after a config change)
stop_pid() {
    running "$1" "$2" || return 0
    local pid; pid=$(cat "$1"); kill "$pid"
    for _ in $(seq 120); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
}

# --- slurmdbd and the accounting records -----------------------------------------------------------------------
[[ -n $dbd_changed ]] && stop_pid /run/slurmdbd.pid slurmdbd
if ! running /run/slurmdbd.pid slurmdbd; then
    /usr/sbin/slurmdbd || die "slurmdbd did not start"
fi
wait_for 60 slurmdbd sacctmgr -n -P show cluster
has() { [[ -n $(sacctmgr -n -P "$@" 2>/dev/null) ]]; }
has show cluster "$CLUSTER" format=cluster || quiet sacctmgr -i add cluster "$CLUSTER"
has show account "$ACCOUNT" format=account ||
    quiet sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description="CI jobs" organization=ci
has show assoc where cluster="$CLUSTER" account="$ACCOUNT" user=root format=user ||
    quiet sacctmgr -i add user root account="$ACCOUNT" cluster="$CLUSTER"

# --- slurmctld and slurmd --------------------------------------------------------------------------------------
stop_pid /run/slurmd.pid slurmd   # the one slurmd of an earlier, one-node version of this script
if [[ -n $conf_changed ]]; then
    for name in "${NODES[@]}"; do stop_pid "/run/slurmd-$name.pid" slurmd; done
    stop_pid /run/slurmctld.pid slurmctld
fi
if ! running /run/slurmctld.pid slurmctld; then
    /usr/sbin/slurmctld || die "slurmctld did not start"
fi
wait_for 60 slurmctld scontrol ping
for name in "${NODES[@]}"; do
    if ! running "/run/slurmd-$name.pid" slurmd; then
        /usr/sbin/slurmd -N "$name" || die "slurmd -N $name did not start"
    fi
done

node_ready() {   # node_ready NAME
    local st
    st=$(sinfo -h -N -n "$1" -o %T 2>/dev/null | head -n1)
    case $st in
        idle | mixed | allocated) return 0 ;;
        drained | draining | down)   # e.g. left drained by an earlier run: put it back
            scontrol update nodename="$1" state=resume >/dev/null 2>&1 || true; return 1 ;;
        *) return 1 ;;
    esac
}
for name in "${NODES[@]}"; do wait_for 90 "node $name to be idle" node_ready "$name"; done
wait_for 30 sacct sacct -n -X

T1=$(date +%s%N)
printf 'slurm: cluster %s, nodes %s (%s), partitions debug+other, accounting up; ready in %d.%01d s\n' "$CLUSTER" \
    "${NODES[*]}" "$(sinfo -h -N -o %T | sort -u | paste -sd,)" \
    $(( (T1 - T0) / 1000000000 )) $(( (T1 - T0) / 100000000 % 10 ))
