#!/usr/bin/env bash
# A two-node SLURM cluster on this one machine, for tests and demos (docs/sweeps.md):
#   bash tests/slurm_cluster.sh start   # install what is missing (apt-get, as root), start it
#   bash tests/slurm_cluster.sh stop
# Nodes node1 and node2 are two slurmd daemons of this machine, 2 CPUs each, in partition
# `debug`; jobs run as the user who submits them. Accounting (slurmdbd on MariaDB) is on, as
# on real clusters: submitit reads job states with sacct. Idempotent: what runs is kept.
set -euo pipefail

ETC=/etc/slurm
LOGS=/var/log/slurm
NODES=(node1 node2)

running() { pgrep -f "^$1" >/dev/null; }

say() { echo "slurm: $*"; }

install() {
    local missing=()
    for cmd in sbatch slurmctld slurmd slurmdbd munged mariadbd; do
        command -v "$cmd" >/dev/null || PATH=$PATH:/usr/sbin command -v "$cmd" >/dev/null \
            || missing+=("$cmd")
    done
    [ ${#missing[@]} -eq 0 ] && return
    if [ "$(id -u)" != 0 ]; then
        echo "slurm: ${missing[*]} missing; installing them needs root (apt-get)." >&2
        exit 2
    fi
    say "installing slurm-wlm, slurmdbd, munge and mariadb-server (about a minute)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm slurmdbd munge \
        mariadb-server >/dev/null
}

configure() {
    mkdir -p "$ETC" "$LOGS" /var/spool/slurmctld /run/munge
    for node in "${NODES[@]}"; do
        grep -qw "$node" /etc/hosts || echo "127.0.0.1 $node" >>/etc/hosts
        mkdir -p "/var/spool/slurmd/$node"
    done
    local mem_mb=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 4))
    cat >"$ETC/slurm.conf" <<EOF
ClusterName=local
SlurmctldHost=$(hostname)
SlurmUser=root
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd-%n.log
SlurmdPidFile=/run/slurmd-%n.pid
SlurmctldPidFile=/run/slurmctld.pid
SlurmdSpoolDir=/var/spool/slurmd/%n
StateSaveLocation=/var/spool/slurmctld
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
# A job that asks for more than a partition has is refused by sbatch, not left pending.
EnforcePartLimits=ALL
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/slurmdbd
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=300
KillWait=30
# A requeued job may start again cred_expire seconds after it stopped (SLURM: 120 s by
# default), and the scheduler looks for work to start every 2 s (60 s).
AuthInfo=cred_expire=5
SchedulerParameters=sched_interval=2
NodeName=node1 NodeHostname=$(hostname) NodeAddr=127.0.0.1 Port=17001 CPUs=2 RealMemory=$mem_mb
NodeName=node2 NodeHostname=$(hostname) NodeAddr=127.0.0.1 Port=17002 CPUs=2 RealMemory=$mem_mb
PartitionName=debug Nodes=node1,node2 Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$ETC/slurmdbd.conf" <<EOF
DbdHost=localhost
SlurmUser=root
LogFile=$LOGS/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$ETC/slurmdbd.conf"
}

wait_for() {  # wait_for <what> <command...>: up to 60 s
    local what=$1
    shift
    for _ in $(seq 120); do
        "$@" >/dev/null 2>&1 && return
        sleep 0.5
    done
    echo "slurm: $what did not come up; see $LOGS/" >&2
    exit 1
}

start() {
    install
    export PATH=$PATH:/usr/sbin
    configure
    chown munge:munge /run/munge
    running /usr/sbin/munged || runuser -u munge -- /usr/sbin/munged
    if ! running /usr/sbin/mariadbd; then
        mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
        (setsid /usr/sbin/mariadbd --user=mysql >>"$LOGS/mariadb.log" 2>&1 &)
        wait_for MariaDB mariadb -e 'select 1'
    fi
    running /usr/sbin/slurmdbd || /usr/sbin/slurmdbd
    wait_for slurmdbd sacctmgr -n list cluster
    sacctmgr -n list cluster format=cluster | grep -qw local || sacctmgr -i add cluster local >/dev/null
    if running /usr/sbin/slurmctld; then
        scontrol reconfigure  # the configuration just written, if it changed
    else
        /usr/sbin/slurmctld
    fi
    for node in "${NODES[@]}"; do
        running "/usr/sbin/slurmd -N $node" || /usr/sbin/slurmd -N "$node"
    done
    wait_for "the nodes" sh -c 'sinfo -h -o %t | grep -qv -E "down|unk|drain" && \
        [ "$(sinfo -h -N -o %t | grep -c -E "idle|mix|alloc")" = 2 ]'
    say "cluster 'local' up: $(sinfo -h -N -o '%N %t' | tr '\n' ' ')"
}

stop() {
    if running /usr/sbin/slurmctld && [ -n "$(squeue -h -o %i)" ]; then
        say "cancelling the jobs still queued or running: $(squeue -h -o %i | tr '\n' ' ')"
        scancel --full $(squeue -h -o %i)
        sleep 2
    fi
    for daemon in "slurmd -N" slurmctld slurmdbd mariadbd munged; do
        pkill -f "^/usr/sbin/$daemon" 2>/dev/null || true
    done
    for _ in $(seq 60); do
        pgrep -f "^/usr/sbin/(slurm|mariadbd|munged)" >/dev/null || break
        sleep 0.5
    done
    say "stopped"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
