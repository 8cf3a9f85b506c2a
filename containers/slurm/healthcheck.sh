#!/bin/bash
# Health of one role; compose's `up --wait` returns when every role is healthy.
set -uo pipefail

CLUSTER=/etc/sim/cluster

node_alive() {
    local pidfile="/run/slurm/slurmd-$1.pid" pid
    [ -s "$pidfile" ] || return 1
    pid=$(cat "$pidfile")
    kill -0 "$pid" 2>/dev/null
}

case ${1:-} in
    mariadb)
        mariadb-admin --protocol=socket ping >/dev/null ;;
    slurmdbd)
        exec 3<>/dev/tcp/127.0.0.1/6819 ;;
    slurmctld)
        scontrol ping | grep -q 'is UP' ;;
    node)
        # Every node this container serves has a live slurmd.
        while read -r kind name _; do
            [ "$kind" = node ] || continue
            node_alive "$name" || { echo "slurmd of $name is not running"; exit 1; }
        done < "$CLUSTER/hosts/${SIM_HOST}.manifest" ;;
    login)
        # Every node of the fleet is registered and in service; one pass over
        # sinfo's answer, so that a fleet of a thousand nodes is checked fast.
        states=$(sinfo -h -N -o '%N %T' 2>&1) || { echo "$states"; exit 1; }
        awk 'NR == FNR { if ($1 != "") wanted[$1] = 1; next }
             { state[$1] = $2 }
             END {
                 for (name in wanted) {
                     # A trailing "-" marks a node backfill has planned for.
                     s = state[name]; sub(/-$/, "", s)
                     if (s !~ /^(idle|mixed|allocated|completing)$/) {
                         print "node " name " is " (s == "" ? "missing" : s)
                         exit 1
                     }
                 }
             }' "$CLUSTER/nodes.list" - <<<"$states" ;;
    *)
        echo "unknown role '${1:-}'"; exit 2 ;;
esac
