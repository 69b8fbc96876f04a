#!/usr/bin/env bash
# A test cluster on one machine: N network namespaces as "hosts" on a switch namespace, each
# with its own address and a rate-limited link (tc tbf). Needs root. docs/multinode.md.
#
#   scripts/cluster.sh up TAG N [RATE] [NET]   hosts ddlt-TAG-h0..h{N-1} at 10.213.NET.{1..N}/24
#                                              behind switch ddlt-TAG-sw; RATE 1gbit (default),
#                                              10gbit, or none
#   scripts/cluster.sh exec TAG I CMD...       run CMD on host I (own netns, own hostname
#                                              ddlt-TAG-hI, own /dev/shm, an /etc/hosts naming
#                                              every host), as exec: its exit code
#   scripts/cluster.sh link TAG I up|down      host I's link (its eth0) up or down
#   scripts/cluster.sh down TAG                kill every process in the cluster, delete it
#   scripts/cluster.sh sweep                   delete clusters whose owner (TAG's pid) is gone
#   scripts/cluster.sh run N [RATE] -- CMD...  up, run CMD with DDLT_TAG set, always down
#
# TAG is [a-z0-9]+; a TAG that starts with a number followed by 'x' (e.g. 4242x1) names its
# owner pid, which `sweep` uses to find leftovers of killed runs. Nothing is created in the
# caller's namespace: the veth pairs are made between the switch and host namespaces, the
# switch (a bridge) has no address, so no traffic leaves the cluster. tc netem is not
# available in every kernel (not in this one): links have a rate, not a latency.
set -euo pipefail
PREFIX=ddlt

die() {
    echo "cluster.sh: $*" >&2
    exit 2
}
need_root() { [[ $(id -u) == 0 ]] || die "needs root (network namespaces)"; }
check_tag() { [[ $1 =~ ^[a-z0-9]+$ ]] || die "bad TAG '$1' (use [a-z0-9]+)"; }
ns_host() { echo "$PREFIX-$1-h$2"; }
ns_switch() { echo "$PREFIX-$1-sw"; }

burst_for() { # tbf needs a burst above one (GSO) packet and about rate/HZ
    case $1 in
    1gbit) echo 256kb ;;
    10gbit) echo 2mb ;;
    *) echo 1mb ;;
    esac
}

shape() { # shape NS DEV RATE
    [[ $3 == none ]] && return 0
    ip -n "$1" link set "$2" gso_max_size 65536 2>/dev/null || true
    tc -n "$1" qdisc replace dev "$2" root tbf rate "$3" burst "$(burst_for "$3")" latency 100ms
}

up() {
    local tag=$1 n=$2 rate=${3:-1gbit} net=${4:-0}
    check_tag "$tag"
    [[ $n =~ ^[0-9]+$ && $n -ge 1 && $n -le 200 ]] || die "bad host count '$n'"
    [[ $rate =~ ^(none|[0-9]+[mg]bit)$ ]] || die "bad RATE '$rate' (1gbit, 10gbit, none)"
    [[ $net =~ ^[0-9]+$ && $net -le 255 ]] || die "bad NET '$net'"
    local sw
    sw=$(ns_switch "$tag")
    ip netns list | grep -q "^$sw\b" && die "cluster $tag exists (cluster.sh down $tag)"
    ip netns add "$sw"
    ip -n "$sw" link set lo up
    ip -n "$sw" link add br0 type bridge
    ip -n "$sw" link set br0 up
    local i h
    for ((i = 0; i < n; i++)); do
        h=$(ns_host "$tag" "$i")
        ip netns add "$h"
        ip -n "$h" link set lo up
        ip -n "$sw" link add "p$i" type veth peer name eth0 netns "$h"
        ip -n "$sw" link set "p$i" master br0 up
        ip -n "$h" addr add "10.213.$net.$((i + 1))/24" dev eth0
        ip -n "$h" link set eth0 up
        shape "$h" eth0 "$rate"  # host -> switch
        shape "$sw" "p$i" "$rate" # switch -> host
    done
    echo "cluster $tag: $n hosts at 10.213.$net.1-$n, links $rate"
}

host_exec() {
    local tag=$1 i=$2
    shift 2
    local h
    h=$(ns_host "$tag" "$i")
    ip netns list | grep -q "^$h\b" || die "no host $i in cluster $tag"
    # every host's name in /etc/hosts (torchrun resolves its own hostname)
    local hosts="127.0.0.1 localhost\n" ns a
    for ns in $(ip netns list | awk '{print $1}' | grep "^$PREFIX-$tag-h" || true); do
        a=$(ip -n "$ns" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
        hosts+="$a $ns\n"
    done
    # own hostname (UTS), own /dev/shm and /etc/hosts (a private mount namespace): a "host"
    # shares nothing with the others but the rest of the filesystem
    exec ip netns exec "$h" unshare --uts --mount --propagation private \
        sh -c 'hostname "$0" && mount -t tmpfs -o size=512m tmpfs /dev/shm &&
               printf "%b" "$1" >/dev/shm/.ddlt-hosts &&
               mount --bind /dev/shm/.ddlt-hosts /etc/hosts && shift && exec "$@"' \
        "$h" "$hosts" "$@"
}

link() {
    local tag=$1 i=$2 state=$3
    [[ $state == up || $state == down ]] || die "link state must be up or down"
    ip -n "$(ns_host "$tag" "$i")" link set eth0 "$state"
}

kill_ns() { # every process in namespace $1, then the namespace
    local pids tries
    for tries in 1 2 3 4 5 6 7 8 9 10; do
        pids=$(ip netns pids "$1" 2>/dev/null || true)
        [[ -z $pids ]] && break
        # shellcheck disable=SC2086
        kill -9 $pids 2>/dev/null || true
        sleep 0.1
    done
    ip netns del "$1" 2>/dev/null || true
}

down() {
    local tag=$1 ns
    check_tag "$tag"
    for ns in $(ip netns list | awk '{print $1}' | grep "^$PREFIX-$tag-" || true); do
        kill_ns "$ns"
    done
}

sweep() { # clusters of owners that are gone (TAG = <pid>x...)
    local ns tag owner
    for ns in $(ip netns list | awk '{print $1}' | grep "^$PREFIX-" || true); do
        tag=${ns#"$PREFIX"-}
        tag=${tag%-*}
        owner=${tag%%x*}
        if [[ $tag =~ ^[0-9]+x && ! -d /proc/$owner ]]; then
            kill_ns "$ns"
        fi
    done
}

run() { # run N [RATE] -- CMD...
    local n=$1 rate=1gbit
    shift
    if [[ ${1:-} != -- ]]; then
        rate=$1
        shift
    fi
    [[ ${1:-} == -- ]] || die "usage: cluster.sh run N [RATE] -- CMD..."
    shift
    RUN_TAG="$$x0" # global: the EXIT trap runs after this function returned
    sweep
    trap 'down "$RUN_TAG"' EXIT
    trap 'exit 130' INT TERM HUP
    up "$RUN_TAG" "$n" "$rate" >&2
    DDLT_TAG=$RUN_TAG "$@"
}

need_root
cmd=${1:-}
[[ $# -gt 0 ]] && shift
case $cmd in
up) up "$@" ;;
exec) host_exec "$@" ;;
link) link "$@" ;;
down) down "$@" ;;
sweep) sweep ;;
run) run "$@" ;;
*) die "usage: cluster.sh up|exec|link|down|sweep|run ... (see the header)" ;;
esac
