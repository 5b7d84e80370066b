# Sourced by `scripts/demo --pods`: the demo's scene with pods that run for real, as root.
#
# A bridge in the root namespace holds 10.252.0.0/24: its gateway .1 is where
# `remora local --captured` serves xDS; every pod of the manifests gets a network namespace
# named after it, joined to the bridge by a veth pair, with its podIP and an /etc/hosts
# (`ip netns exec` reads /etc/netns/<pod>/hosts) that answers Service names with their
# ClusterIPs, as cluster DNS would. Pods get no default route: nothing they send can leave
# the bridge. In a meshed pod, as an injected pod starts: `remora init-network` first, then
# Envoy as the proxy user, then the app. Everything is removed on exit.
#
# Uses from scripts/demo: work, remora, ENVOY_BIN, mode, pids, upstream, teardown_pods;
# defines request and teardown_pods for it.
# shellcheck shell=bash
# shellcheck disable=SC2154 # work, remora and mode are scripts/demo's

readonly POD_NET=10.252.0
readonly POD_PREFIX=24
readonly GATEWAY=$POD_NET.1
readonly XDS_ADDR=$GATEWAY:15010
readonly BRIDGE=rmrdemo-br
# Host sides of the pods' veth pairs: rmrdemo0, rmrdemo1, ...
readonly VETH=rmrdemo
# The bridge's alias, followed by the demo's process id: a bridge whose owner is gone was
# left by a killed demo and is cleaned up.
readonly OWNER="remora-demo pid"
# The proxy user, PROXY_UID and PROXY_GID of remora_api::sidecar_policy: init-network lets
# its connections through, so Envoy must run as it.
readonly PROXY_USER=1337
readonly ADMIN=127.0.0.1:15000
readonly CLIENT=web-0

declare -A pod_ip=() pod_meshed=() pod_version=() pod_ns=()
pod_names=()
services=()
control_plane=""

pods_die() { printf 'scripts/demo --pods: %s\n' "$*" >&2; exit 1; }

# Prints "pod NAME NAMESPACE IP MESHED VERSION" and "service NAME NAMESPACE CLUSTER_IP" for
# each Pod and Service of the manifests, read from lines laid out as in examples/local-pods.
read_manifests() {
    awk '
        function flush() {
            if (kind == "Pod") print "pod", name, ns, ip, meshed + 0, (version == "" ? "-" : version)
            if (kind == "Service") print "service", name, ns, ip
            kind = name = ns = ip = version = ""
            meshed = 0
        }
        FNR == 1 || /^---/ { flush() }
        /^kind: / { kind = $2 }
        /^  name: / && name == "" { name = $2 }
        /^  namespace: / { ns = $2 }
        /^  (podIP|clusterIP): / { ip = $2 }
        /^ *- name: remora-proxy *$/ { meshed = 1 }
        /^  labels: / && match($0, /version: [^,} ]+/) { version = substr($0, RSTART + 9, RLENGTH - 9) }
        END { flush() }
    ' "$@"
}

load_scene() {
    local what name ns ip meshed version
    while read -r what name ns ip meshed version; do
        [[ -n "$ip" ]] || pods_die "$what $ns/$name has no address in the manifests"
        if [[ "$what" == pod ]]; then
            pod_names+=("$name")
            pod_ip[$name]=$ip pod_ns[$name]=$ns pod_meshed[$name]=$meshed
            pod_version[$name]=${version/#-/}
        else
            services+=("$ns $name $ip")
        fi
    done < <(read_manifests "$work/mesh"/*.yaml)
    [[ -n "${pod_ip[$CLIENT]:-}" ]] || pods_die "the manifests have no pod $CLIENT"
}

# Removes the pods' veths, namespaces (stopping what still runs in them) and hosts files, and
# the bridge. Each step is tried whatever the others did.
remove_network() {
    local ns link
    for link in $(ip -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }'); do
        if [[ "$link" =~ ^${VETH}[0-9]+$ ]]; then ip link delete "$link" 2>/dev/null || true; fi
    done
    for ns in "${pod_names[@]}"; do
        if ip netns list | grep -qx "$ns\( .*\)\?"; then
            ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
            ip netns delete "$ns" || true
        fi
        rm -rf "/etc/netns/$ns"
    done
    ip link delete "$BRIDGE" 2>/dev/null || true
}

# Makes the bridge, after cleaning what a killed demo left; refuses to touch what is not
# the demo's.
claim_network() {
    if ip link show dev "$BRIDGE" >/dev/null 2>&1; then
        local owner
        owner=$(ip -d link show dev "$BRIDGE" | sed -n "s/^ *alias $OWNER //p")
        [[ -n "$owner" ]] || pods_die "a link $BRIDGE exists and is not the demo's"
        [ ! -d "/proc/$owner" ] || pods_die "another demo (pid $owner) is running"
        echo "scripts/demo --pods: removing what the demo of pid $owner left" >&2
        remove_network
    fi
    local ns
    for ns in "${pod_names[@]}"; do
        if ip netns list | grep -qx "$ns\( .*\)\?" || [ -e "/etc/netns/$ns" ]; then
            pods_die "a network namespace $ns (or /etc/netns/$ns) exists and is not the demo's"
        fi
    done
    # A killed demo's `remora local` would still hold the port and serve its old folder.
    if ss -Hltn "sport = :${XDS_ADDR##*:}" | awk '{ print $4 }' |
        grep -qE "^($GATEWAY|0\.0\.0\.0|\[::\]|\*):"; then
        pods_die "something listens on $XDS_ADDR already: ss -ltnp 'sport = :${XDS_ADDR##*:}'"
    fi
    # shellcheck disable=SC2317 # scripts/demo's cleanup calls it
    teardown_pods() { remove_network; }
    ip link add name "$BRIDGE" type bridge
    ip link set dev "$BRIDGE" alias "$OWNER $$"
    ip addr add "$GATEWAY/$POD_PREFIX" dev "$BRIDGE"
    ip link set dev "$BRIDGE" up
}

# The pod's /etc/hosts: itself, and each Service by the names cluster DNS answers (the short
# name only in its own namespace).
hosts_file() {
    local pod=$1 entry ns name ip short
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n%s\t%s\n' "${pod_ip[$pod]}" "$pod"
    for entry in "${services[@]}"; do
        read -r ns name ip <<<"$entry"
        short=""
        [[ "$ns" == "${pod_ns[$pod]}" ]] && short="$name "
        printf '%s\t%s%s.%s %s.%s.svc %s.%s.svc.cluster.local\n' \
            "$ip" "$short" "$name" "$ns" "$name" "$ns" "$name" "$ns"
    done
}

# The pod's namespace on the bridge, with its address and hosts file.
plumb_pod() {
    local pod=$1 veth=$VETH$2
    ip netns add "$pod"
    ip link add "$veth" type veth peer name eth0 netns "$pod"
    ip link set dev "$veth" master "$BRIDGE" up
    ip -n "$pod" link set dev lo up
    ip -n "$pod" addr add "${pod_ip[$pod]}/$POD_PREFIX" dev eth0
    ip -n "$pod" link set dev eth0 up
    mkdir -p "/etc/netns/$pod"
    hosts_file "$pod" >"/etc/netns/$pod/hosts"
}

# The redirect, then the pod's Envoy as the proxy user (whose connections are not redirected).
start_sidecar() {
    local pod=$1 envoy=$2
    ip netns exec "$pod" "$remora" init-network --proxy-uid "$PROXY_USER" \
        --proxy-gid "$PROXY_USER" >"$work/$pod.init-network.log" 2>&1 ||
        pods_die "remora init-network failed in $pod (see $work/$pod.init-network.log)"
    "$remora" bootstrap --namespace "${pod_ns[$pod]}" --pod "$pod" --xds-address "$XDS_ADDR" \
        --admin-address "$ADMIN" "${mode[@]}" --output "$work/$pod.json"
    ip netns exec "$pod" setpriv --reuid "$PROXY_USER" --regid "$PROXY_USER" --clear-groups \
        "$envoy" -c "$work/$pod.json" --use-dynamic-base-id --log-level error \
        >"$work/$pod.envoy.log" 2>&1 &
    pids+=($!)
}

# Waits (at most 10 s) until the pod's Envoy has its first config.
wait_ready() {
    local pod=$1
    for _ in $(seq 50); do
        kill -0 "$control_plane" 2>/dev/null || pods_die "remora local stopped (its error is above)"
        [[ "$(ip netns exec "$pod" curl -s -m 1 "http://$ADMIN/ready" || true)" == LIVE ]] && return 0
        sleep 0.2
    done
    tail -n 20 "$work/$pod.envoy.log" >&2 || true
    pods_die "$pod's Envoy did not become ready in 10 s (its log is above)"
}

# An Envoy binary the proxy user can run: the cached one may sit under a private home.
envoy_for_proxy_user() {
    if setpriv --reuid "$PROXY_USER" --regid "$PROXY_USER" --clear-groups test -x "$ENVOY_BIN"; then
        printf '%s\n' "$ENVOY_BIN"
    else
        # A hard link costs nothing where the file system allows one.
        ln "$(readlink -f "$ENVOY_BIN")" "$work/envoy" 2>/dev/null ||
            install -m 755 "$(readlink -f "$ENVOY_BIN")" "$work/envoy"
        printf '%s\n' "$work/envoy"
    fi
}

pods_scene() {
    cp examples/local-pods/*.yaml "$work/mesh/"
    # The proxy user reads its bootstrap from here.
    chmod 755 "$work"
    load_scene
    claim_network
    local envoy
    envoy=$(envoy_for_proxy_user)

    RUST_LOG=warn "$remora" local --insecure --captured --dir "$work/mesh" --xds-addr "$XDS_ADDR" &
    control_plane=$!
    pids+=("$control_plane")

    local i=0 pod
    for pod in "${pod_names[@]}"; do
        plumb_pod "$pod" "$i"
        i=$((i + 1))
        if [[ "${pod_meshed[$pod]}" == 1 ]]; then
            start_sidecar "$pod" "$envoy"
            wait_ready "$pod"
        fi
        [[ -z "${pod_version[$pod]}" ]] || upstream "${pod_version[$pod]}" 0.0.0.0 "$pod"
    done
    # shellcheck disable=SC2317 # scripts/demo's client loop calls it
    request() { ip netns exec "$CLIENT" curl -s -m 2 http://reviews:9080/; }

    cat <<MSG

  Remora local mode, captured addressing: xDS on $XDS_ADDR (bridge $BRIDGE).
  Pods, each in its own network namespace: $(for p in "${pod_names[@]}"; do printf '%s %s  ' "$p" "${pod_ip[$p]}"; done)
  $CLIENT's client, unmodified: ip netns exec $CLIENT curl http://reviews:9080/
  Edit $work/mesh/40-routes.yaml (e.g. the weights 90/10) and watch the split.
  In another shell: $remora proxy-status --server $XDS_ADDR
                    $remora proxy-config ${pod_ns[$CLIENT]}/$CLIENT --server $XDS_ADDR
                    ip netns exec $CLIENT iptables-save -t nat   (the redirect)
  Sidecar logs (requests each proxy took): $work/<pod>.envoy.log

MSG
}
