#!/bin/bash
# Starts one role of the simulated cluster. The rendered fleet files are
# mounted at $CLUSTER and the per-cluster secrets at $SECRETS.
set -euo pipefail

CLUSTER=/etc/sim/cluster
SECRETS=/var/lib/sim/secrets
SECRET_WAIT_S=${SIM_SECRET_WAIT_S:-120}

log() { echo "[$(date -u +%H:%M:%S)] ${ROLE:-entrypoint}: $*" >&2; }
die() { log "error: $*"; exit 1; }

wait_for_file() {
    local path=$1 deadline=$((SECONDS + SECRET_WAIT_S))
    until [ -s "$path" ]; do
        [ "$SECONDS" -lt "$deadline" ] || die "waited ${SECRET_WAIT_S}s for $path; did the keygen service run?"
        sleep 0.2
    done
}

# Slurm reads its files from /etc/slurm. The rendered ones are linked, so a
# re-render followed by `scontrol reconfigure` is seen; the key is copied,
# since Slurm insists that SlurmUser owns it.
install_slurm_config() {
    local name
    [ -f "$CLUSTER/slurm.conf" ] || die "no slurm.conf in $CLUSTER; run 'sim render' first"
    for name in slurm.conf gres.conf cgroup.conf; do
        ln -sfn "$CLUSTER/$name" "/etc/slurm/$name"
    done
    wait_for_file "$SECRETS/slurm.key"
    install -o slurm -g slurm -m 600 "$SECRETS/slurm.key" /etc/slurm/slurm.key
    install -d -o slurm -g slurm /run/slurm /run/slurmctld /run/slurmdbd \
        /var/log/slurm /var/lib/slurm
}

new_secret() {
    local path=$1 bytes=$2
    [ -s "$path" ] && return 0
    head -c "$bytes" /dev/urandom > "$path.tmp"
    mv "$path.tmp" "$path"
    log "generated $(basename "$path")"
}

role_keygen() {
    umask 077
    mkdir -p "$SECRETS"
    new_secret "$SECRETS/slurm.key" 1024
    if [ ! -s "$SECRETS/db.password" ]; then
        head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' > "$SECRETS/db.password.tmp"
        mv "$SECRETS/db.password.tmp" "$SECRETS/db.password"
        log "generated db.password"
    fi
}

role_mariadb() {
    wait_for_file "$SECRETS/db.password"
    local password
    password=$(cat "$SECRETS/db.password")
    install -d -o mysql -g mysql /run/mysqld
    if [ ! -d /var/lib/mysql/mysql ]; then
        log "initialising the database directory"
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db >/dev/null
    fi
    # Applied at every start, so the account always matches the secret.
    umask 077
    cat > /run/mysqld/init.sql <<SQL
CREATE USER IF NOT EXISTS 'slurm'@'%' IDENTIFIED BY '$password';
ALTER USER 'slurm'@'%' IDENTIFIED BY '$password';
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'%';
FLUSH PRIVILEGES;
SQL
    chown mysql:mysql /run/mysqld/init.sql
    exec mariadbd --user=mysql --datadir=/var/lib/mysql --bind-address=0.0.0.0 \
        --init-file=/run/mysqld/init.sql --innodb-buffer-pool-size=64M \
        --innodb-lock-wait-timeout=900 --max-connections=64 --skip-name-resolve
}

role_slurmdbd() {
    install_slurm_config
    wait_for_file "$SECRETS/db.password"
    umask 077
    { cat "$CLUSTER/slurmdbd.conf"; echo "StoragePass=$(cat "$SECRETS/db.password")"; } \
        > /etc/slurm/slurmdbd.conf
    chown slurm:slurm /etc/slurm/slurmdbd.conf
    exec slurmdbd -D
}

role_slurmctld() {
    install_slurm_config
    install -d -o slurm -g slurm /var/lib/slurm/slurmctld
    exec slurmctld -D -i
}

# Starts the slurmd of every given node at once and waits until each runs
# (has written its pid file). On a loaded machine that can take minutes, so
# the wait is long; a slurmd that died is started again, one that is merely
# slow is not.
start_slurmds() {
    local try node deadline waiting
    declare -A pids=()
    waiting=("$@")
    for try in 1 2 3; do
        for node in "${waiting[@]}"; do
            rm -f "/run/slurm/slurmd-$node.pid"
            slurmd -D -N "$node" &
            pids[$node]=$!
            # Each slurmd replaces /run/slurm/sack.socket (unlink, then
            # bind); two doing so at the same instant make one exit.
            sleep 0.1
        done
        deadline=$((SECONDS + ${SIM_SLURMD_START_S:-600}))
        while [ "$SECONDS" -lt "$deadline" ]; do
            local pending=0
            for node in "${waiting[@]}"; do
                if kill -0 "${pids[$node]}" 2>/dev/null \
                        && [ ! -s "/run/slurm/slurmd-$node.pid" ]; then
                    pending=1
                    break
                fi
            done
            [ "$pending" -eq 0 ] && break
            sleep 0.5
        done
        local died=()
        for node in "${waiting[@]}"; do
            if ! kill -0 "${pids[$node]}" 2>/dev/null \
                    || [ ! -s "/run/slurm/slurmd-$node.pid" ]; then
                # Under `set -e`: a slurmd that already died must not end us.
                kill "${pids[$node]}" 2>/dev/null || true
                wait "${pids[$node]}" 2>/dev/null || true
                died+=("$node")
            fi
        done
        [ "${#died[@]}" -eq 0 ] && return 0
        log "slurmd of ${died[*]} did not start (try $try)"
        waiting=("${died[@]}")
    done
    die "slurmd of ${waiting[*]} would not start; see /var/log/slurm/slurmd-NODE.log"
}

# Makes the fake GPUs and starts the slurmd of every node this container
# serves, as its manifest lists them.
role_node() {
    local host=${SIM_HOST:?SIM_HOST names this container}
    local manifest="$CLUSTER/hosts/$host.manifest"
    local kind a b c nodes=()
    [ -f "$manifest" ] || die "no manifest for host $host in $CLUSTER/hosts"
    install_slurm_config
    # slurmd runs as root, and Slurm 26.05's refuses a run folder it does not own.
    chown root:root /run/slurm
    while read -r kind a b c; do
        case $kind in
            node)
                nodes+=("$a")
                install -d "/var/lib/slurm/slurmd/$a" ;;
            device)
                install -d "$(dirname "$a")"
                [ -c "$a" ] || mknod -m 666 "$a" c "$b" "$c" ;;
            ''|'#'*) ;;
            *) die "$manifest: unknown line kind '$kind'" ;;
        esac
    done < "$manifest"
    [ "${#nodes[@]}" -gt 0 ] || die "$manifest lists no node"
    if [ "${#nodes[@]}" -eq 1 ]; then
        # One node, one container: losing the container is losing the node.
        exec slurmd -D -N "${nodes[0]}"
    fi
    # A few at a time: hundreds of slurmd starting at once on a small
    # machine only slow each other down.
    local batch=${SIM_SLURMD_BATCH:-4} i
    for ((i = 0; i < ${#nodes[@]}; i += batch)); do
        start_slurmds "${nodes[@]:i:batch}"
    done
    log "started slurmd for ${#nodes[@]} nodes"
    # Reap the slurmd that end (a node stopped on purpose stays stopped);
    # ones started again by `docker exec` belong to tini.
    while true; do
        wait || true
        sleep 5
    done
}

# Slurm's client commands authenticate through sackd, so the policy
# container runs one while it applies the fleet's policy.
role_policy() {
    install_slurm_config
    sackd -D &
    local sackd=$! deadline=$((SECONDS + 30)) status=0
    until [ -S /run/slurm/sack.socket ]; do
        [ "$SECONDS" -lt "$deadline" ] || die "sackd did not start"
        sleep 0.1
    done
    python3 -m sim.policy apply "$CLUSTER/fleet.json" || status=$?
    kill "$sackd"
    wait "$sackd" 2>/dev/null || true
    return "$status"
}

role_login() {
    install_slurm_config
    exec sackd -D
}

ROLE=${1:-}
case $ROLE in
    keygen|mariadb|slurmdbd|slurmctld|policy|node|login) shift; "role_$ROLE" "$@" ;;
    *) die "unknown role '${ROLE}' (roles: keygen, mariadb, slurmdbd, slurmctld, policy, node, login)" ;;
esac
