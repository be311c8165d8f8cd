#!/usr/bin/env bash
# Run experiments/slurm/serve.sbatch and a job array of experiments/slurm/search.sbatch on a real Slurm: a
# throwaway cluster of one node on loopback (slurmctld + slurmd, no munge, no cgroups), started here and stopped
# on exit. Tiny CPU trials (digits at 16 px, width 4, 2 epochs); while they run, one task is cancelled (scancel)
# and another requeued (scontrol requeue), each while it trains a trial. Then the study must hold its budget of
# finished trials, none running, every interrupted trial finished exactly once in its retry, and the shared
# leaderboard must list the storage's trials (experiments/slurm/check_study.py).
#
#   experiments/slurm/test_on_slurm.sh          # as root, from the repository root; installs slurm-wlm if missing
#
# Environment: PYTHON (default .venv/bin/python; ktg is run as "$PYTHON -m ktg.cli" from this checkout),
# KEEP=1 keeps the temporary folder (logs, study) for a look afterwards.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
PYTHON="${PYTHON:-.venv/bin/python}"
PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")"  # absolute, but still the venv's link
TASKS=3
TRIALS=12

if [ "$(id -u)" != 0 ]; then
    echo "test_on_slurm: slurmd runs jobs as their user and must run as root; run this as root" >&2
    exit 2
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm >/dev/null
fi

WORK="$(mktemp -d /tmp/ktg-slurm.XXXXXX)"
mkdir -p "$WORK/state" "$WORK/spool" "$WORK/logs"
free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
NODE="$(hostname)"
export SLURM_CONF="$WORK/slurm.conf"
cat > "$SLURM_CONF" <<EOF
ClusterName=ktgtest
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
AuthType=auth/none
CredType=cred/none
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/slurmctld.log
SlurmdLogFile=$WORK/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=30
MpiDefault=none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=8 RealMemory=4000 State=UNKNOWN
PartitionName=test Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

# The daemons run in the foreground (-D) as children of this script, so that it stops exactly them.
slurmctld -D -c > "$WORK/slurmctld.out" 2>&1 &
CTLD=$!
slurmd -D > "$WORK/slurmd.out" 2>&1 &
SLURMD=$!
cleanup() {
    status=$?
    scancel --quiet --user=root 2>/dev/null || true
    kill "$SLURMD" "$CTLD" 2>/dev/null || true
    wait "$SLURMD" "$CTLD" 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ] || [ "$status" != 0 ]; then echo "test_on_slurm: logs and study kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap "exit 143" TERM INT  # so that a timeout or Ctrl-C still stops the daemons
say() { echo "test_on_slurm: $(date -u +%H:%M:%S) $*"; }
wait_until() {  # wait_until SECONDS WHAT COMMAND...: until COMMAND succeeds
    local seconds=$1 what=$2; shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then say "gave up waiting ${seconds} s for $what" >&2; exit 1; fi
        sleep 1
    done
}
node_ready() { sinfo --noheader --nodes "$NODE" --format %t | grep -Eq '^(idle|mix|alloc)'; }
wait_until 60 "the Slurm node" node_ready
say "Slurm $(sinfo --version | cut -d' ' -f2) runs: one node $NODE on loopback"

OUT="$WORK/search"   # the shared filesystem of a real cluster
DB="$WORK/study.db"
URL="sqlite:///$DB"
export KTG="$PYTHON -m ktg.cli" PYTHONPATH="$ROOT" KTG_OUT="$OUT" KTG_SERVER_PORT="$(free_port)"
SERVER=$(sbatch --parsable --cpus-per-task=1 --output="$WORK/logs/storage-%j.log" \
    experiments/slurm/serve.sbatch "$DB" --grace-period 20)
wait_until 60 "the storage server to listen" grep -q "serving" "$WORK/logs/storage-$SERVER.log"
say "storage server: job $SERVER, $(head -n 1 "$WORK/logs/storage-$SERVER.log")"

# --gres=none: this node has no GPU. --heartbeat-interval 2 --grace-period 30: a worker waits 30 s for its server.
ARRAY=$(KTG_SERVER_JOB=$SERVER sbatch --parsable --array=0-$((TASKS - 1)) --dependency=after:"$SERVER" --gres=none \
    --cpus-per-task=1 --time=30 --output="$WORK/logs/search-%A_%a.log" experiments/slurm/search.sbatch \
    --baseline none --rescore-top 0 --dataset digits --image-size 16 --width 4 --nodes 2 --crop-sizes 3 --epochs 2 \
    --batch-size 32 \
    --trials "$TRIALS" --device cpu --heartbeat-interval 2 --grace-period 30)
say "search: job array $ARRAY, $TASKS tasks, budget $TRIALS trials"

log_of() { echo "$WORK/logs/search-${ARRAY}_$1.log"; }
worker_of() {  # worker_of TASK [START]: the HOST:PID that the task's START-th start (1: the first) announced
    local line
    line=$(grep "ktg search is pid" "$(log_of "$1")" | sed -n "${2:-1}p")
    [ -n "$line" ] || return 1
    echo "$NODE:$(echo "$line" | sed -E 's/.*is pid ([0-9]+).*/\1/')"
}
# Both at once, as soon as tasks 1 and 2 train a trial each: on an idle machine the budget is spent in seconds.
wait_until 180 "task 1 to start" worker_of 1
wait_until 180 "task 2 to start" worker_of 2
trials=$("$PYTHON" experiments/slurm/check_study.py training "$URL" "$(worker_of 1)" "$(worker_of 2)" --timeout 300)
say "tasks 1 and 2 train trials $trials: scancel task 1, scontrol requeue task 2"
scancel "${ARRAY}_1"
scontrol requeue "${ARRAY}_2"
# Slurm holds a requeued job back for a while (BeginTime); let it rejoin while the study still has trials to run.
requeued() { squeue --noheader --jobs "${ARRAY}_2" --states PENDING --format %i | grep -q .; }
wait_until 60 "task 2 to be requeued" requeued
scontrol update JobId="${ARRAY}_2" StartTime=now

array_running() { [ -n "$(squeue --noheader --jobs "$ARRAY" --format %i)" ]; }
array_done() { ! array_running; }
wait_until 900 "the job array to finish" array_done
say "job array finished"
scancel "$SERVER"
server_gone() { [ -z "$(squeue --noheader --jobs "$SERVER" --format %i)" ]; }
wait_until 60 "the storage server to stop" server_gone

failed=0
for task in $(seq 0 $((TASKS - 1))); do
    log=$(log_of "$task")
    starts=$(grep -c "ktg search is pid" "$log" || true)
    ends=$(grep "exited with status" "$log" | sed -E 's/.*status ([0-9]+).*/\1/' | tr '\n' ' ')
    say "task $task: started $starts time(s), ktg exited with status: ${ends:-none}"
    if grep -q "Traceback" "$log"; then say "task $task printed a traceback: see $log"; failed=1; fi
done
expect() {  # expect TASK WHAT PATTERN: the task's ktg exit statuses, in order, match PATTERN
    local ends
    ends=$(grep "exited with status" "$(log_of "$1")" | sed -E 's/.*status ([0-9]+).*/\1/' | tr '\n' ' ')
    if ! [[ "$ends" =~ $3 ]]; then say "FAIL: task $1 $2; its exit statuses: $ends"; failed=1; fi
}
expect 0 "was not cancelled yet did not end the search" '^0 $'
expect 1 "did not stop cleanly (130) on scancel" '^130 $'
expect 2 "did not stop cleanly on requeue and finish after it" '^130 0 $'
grep -h "stopped" "$WORK/logs/storage-$SERVER.log" | sed 's/^/test_on_slurm: storage server: /'
"$PYTHON" experiments/slurm/check_study.py verify "$URL" "$OUT" "$TRIALS" || failed=1
if [ "$failed" != 0 ]; then say "FAILED"; exit 1; fi
say "passed"
