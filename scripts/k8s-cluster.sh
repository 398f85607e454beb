#!/usr/bin/env bash
# A real Kubernetes control plane on loopback for the operator's cluster tests, from the binaries
# scripts/k8s-build.sh builds (pinned in tests/k8s/):
#   etcd                     --unsafe-no-fsync, data in <dir>/etcd
#   kube-apiserver           TLS with a CA made here (openssl), Node,RBAC authorization, the
#                            default admission plugins plus NodeRestriction (as kubeadm),
#                            service-account token issuance
#   kube-controller-manager  node lifecycle, garbage collector, namespace, deployment, ReplicaSet,
#                            service-account (and token), HPA, root CA publisher controllers;
#                            one service account per controller
#   kube-scheduler
#   kwok                     one fake node (kwok-node-0) that turns Ready, and makes the pods
#                            the scheduler puts on it Ready (stages in tests/k8s/stages/)
# Every component listens on free loopback ports only; nothing leaves the machine.
#
# Usage: scripts/k8s-cluster.sh start <dir>   start (a cluster already running in <dir> is
#                                             stopped first), wait until a Deployment's pod is
#                                             Ready, print the `export` lines
#        scripts/k8s-cluster.sh stop <dir>    stop what `start` started (pid files); idempotent
#        scripts/k8s-cluster.sh env <dir>     print `export KUBECONFIG=<dir>/kubeconfig ...`
# Logs: <dir>/logs/<component>.log. Binaries: $PULSE_K8S_BIN, else scripts/k8s-build.sh's.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf 'k8s-cluster: %s\n' "$*" >&2; }
die() {
	printf 'k8s-cluster: error: %s\n' "$*" >&2
	exit 1
}

COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
# Room for thousands of Services and pods: `./dev bench operator` runs 100 tenants of five
# components each (500 Services, 500 pods); a /24 ran out of Service IPs at about 50 tenants.
SERVICE_CIDR=10.96.0.0/16
POD_CIDR=10.244.0.0/16
NODE=kwok-node-0
# Controllers of kube-controller-manager (their names in Kubernetes 1.36). The node lifecycle
# controller lifts the node.kubernetes.io/not-ready taint the API server puts on a new node once
# kwok reports it Ready; without it nothing gets scheduled.
CONTROLLERS=node-lifecycle-controller,garbage-collector-controller,namespace-controller,deployment-controller,replicaset-controller,serviceaccount-controller,serviceaccount-token-controller,horizontal-pod-autoscaler-controller,root-ca-certificate-publisher-controller

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
}

# ---------------------------------------------------------------- processes

pid_of() {
	local f="$DIR/run/$1.pid" pid
	[[ -f $f ]] || return 1
	pid="$(cat "$f" 2>/dev/null)" || return 1
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	# Guard against a recycled pid: it must still be this component.
	[[ "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" == *"$1"* ]] || return 1
	printf '%s\n' "$pid"
}

# stop_all NAME...: stops these components at once, waits up to 10 s for them, kills the rest.
stop_all() {
	local name pid pids=()
	for name in "$@"; do
		if pid="$(pid_of "$name")"; then
			kill -TERM "$pid" 2>/dev/null || true
			pids+=("$pid")
		fi
	done
	local deadline=$((SECONDS + 10))
	for pid in "${pids[@]}"; do
		while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
		if kill -0 "$pid" 2>/dev/null; then
			log "pid $pid did not stop within 10 s; killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done
	for name in "$@"; do
		rm -f "$DIR/run/$name.pid"
	done
}

# The cluster is thrown away, so everything but etcd stops at once; etcd last (an API server
# that lost etcd hangs in its shutdown).
cmd_stop() {
	[[ -d $DIR/run ]] || return 0
	stop_all kwok kube-scheduler kube-controller-manager kube-apiserver
	stop_all etcd
}

# launch NAME ARGS...: runs $BIN/NAME in its own session (a Ctrl-C in the terminal goes to the
# caller, whose trap stops the cluster in order), logs to <dir>/logs/NAME.log.
launch() {
	local name="$1"
	shift
	setsid "$BIN/$name" "$@" </dev/null >"$DIR/logs/$name.log" 2>&1 8>&- 9>&- &
	printf '%s\n' "$!" >"$DIR/run/$name.pid"
}

fail_start() {
	local name="$1"
	shift
	log "$*"
	tail -n 40 "$DIR/logs/$name.log" >&2 2>/dev/null || true
	cmd_stop
	die "$* (log: $DIR/logs/$name.log)"
}

# wait_until SECONDS COMPONENT COMMAND...: retries COMMAND every 0.2 s; fails when the component
# exited or the time is up.
wait_until() {
	local limit="$1" name="$2"
	local deadline=$((SECONDS + limit))
	shift 2
	until "$@" >/dev/null 2>&1; do
		pid_of "$name" >/dev/null || fail_start "$name" "$name exited at start"
		((SECONDS < deadline)) || fail_start "$name" "waited $limit s for: $*"
		sleep 0.2
	done
}

# Prints N free TCP ports on 127.0.0.1 (bound once by the kernel's choice, then released).
free_ports() {
	python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# ---------------------------------------------------------------- certificates

# cert NAME SUBJECT EXTENSIONS: an EC P-256 key and a certificate signed by the CA.
cert() {
	local name="$1" subj="$2" ext="$3" p="$DIR/pki"
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$p/$name.key" \
		-subj "$subj" -out "$p/$name.csr" 2>/dev/null
	printf '%s\n' "$ext" >"$p/$name.ext"
	openssl x509 -req -in "$p/$name.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial \
		-days 30 -extfile "$p/$name.ext" -out "$p/$name.crt" 2>/dev/null
	rm -f "$p/$name.csr" "$p/$name.ext"
}

make_pki() {
	local p="$DIR/pki"
	mkdir -p "$p"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$p/ca.key" \
		-subj "/CN=pulse-test-ca" -days 30 -out "$p/ca.crt" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
	cert apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
	local client="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
	cert admin "/O=system:masters/CN=pulse-admin" "$client"
	cert controller-manager "/CN=system:kube-controller-manager" "$client"
	cert scheduler "/CN=system:kube-scheduler" "$client"
	# Service-account tokens: the API server signs with sa.key, verifies with sa.pub.
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$p/sa.key" 2>/dev/null
	openssl pkey -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
	chmod 600 "$p"/*.key
}

# kubeconfig FILE USER: a kubeconfig for the cluster with the client certificate of USER.
kubeconfig() {
	local p="$DIR/pki"
	cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: pulse-test
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $p/ca.crt
users:
- name: $2
  user:
    client-certificate: $p/$2.crt
    client-key: $p/$2.key
contexts:
- name: pulse-test
  context:
    cluster: pulse-test
    user: $2
current-context: pulse-test
EOF
	chmod 600 "$1"
}

# ---------------------------------------------------------------- start

api_ready() {
	curl -fsS --max-time 2 --cacert "$DIR/pki/ca.crt" --cert "$DIR/pki/admin.crt" --key "$DIR/pki/admin.key" \
		"https://127.0.0.1:$API_PORT/readyz" >/dev/null
}

kubectl() { "$BIN/kubectl" --kubeconfig "$DIR/kubeconfig" "$@"; }

node_ready() {
	[[ "$(kubectl get node "$NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

sa_ready() { kubectl -n "$1" get serviceaccount default; }

smoke_ready() {
	[[ "$(kubectl -n pulse-k8s-smoke get deployment smoke -o 'jsonpath={.status.readyReplicas}' 2>/dev/null)" == 1 ]]
}

cmd_start() {
	local t0=$SECONDS
	if [[ -n ${PULSE_K8S_BIN:-} ]]; then
		BIN="$PULSE_K8S_BIN"
	else
		BIN="$("$ROOT/scripts/k8s-build.sh")" || die "scripts/k8s-build.sh failed"
	fi
	local c
	for c in "${COMPONENTS[@]}" kubectl; do
		[[ -x $BIN/$c ]] || die "$BIN/$c is missing (run scripts/k8s-build.sh, or fix PULSE_K8S_BIN)"
	done
	have_cmd openssl || die "openssl is needed to make the cluster's certificates (apt-get install openssl)"
	have_cmd curl || die "curl is needed to probe the API server (apt-get install curl)"
	have_cmd python3 || die "python3 is needed to find free ports"

	cmd_stop
	rm -rf "$DIR/etcd" "$DIR/pki" "$DIR/run" "$DIR/logs" "$DIR/kubeconfig" "$DIR"/*.kubeconfig "$DIR/kwok.yaml"
	mkdir -p "$DIR/run" "$DIR/logs"
	printf '%s\n' "$BIN" >"$DIR/run/bin"

	read -r ETCD_PORT PEER_PORT API_PORT KCM_PORT SCHED_PORT KWOK_PORT <<<"$(free_ports 6)"
	make_pki
	kubeconfig "$DIR/kubeconfig" admin
	kubeconfig "$DIR/controller-manager.kubeconfig" controller-manager
	kubeconfig "$DIR/scheduler.kubeconfig" scheduler

	launch etcd --name pulse-test --data-dir "$DIR/etcd" \
		--listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--listen-peer-urls "http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
		--initial-cluster "pulse-test=http://127.0.0.1:$PEER_PORT" \
		--unsafe-no-fsync --quota-backend-bytes=2147483648 --log-level=warn
	wait_until 20 etcd curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health"

	local p="$DIR/pki"
	launch kube-apiserver --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
		--bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
		--cert-dir "$DIR/pki" --tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" \
		--client-ca-file "$p/ca.crt" \
		--authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
		--service-account-issuer https://kubernetes.default.svc.cluster.local \
		--service-account-key-file "$p/sa.pub" --service-account-signing-key-file "$p/sa.key" \
		--service-cluster-ip-range "$SERVICE_CIDR" --allow-privileged=true \
		--profiling=false --v=1
	wait_until 60 kube-apiserver api_ready
	log "API server ready on https://127.0.0.1:$API_PORT after $((SECONDS - t0)) s"

	launch kube-controller-manager --kubeconfig "$DIR/controller-manager.kubeconfig" \
		--authentication-kubeconfig "$DIR/controller-manager.kubeconfig" \
		--authorization-kubeconfig "$DIR/controller-manager.kubeconfig" \
		--bind-address 127.0.0.1 --secure-port "$KCM_PORT" --cert-dir "$DIR/pki/kcm" \
		--leader-elect=false --controllers "$CONTROLLERS" \
		--use-service-account-credentials=true --root-ca-file "$p/ca.crt" \
		--service-account-private-key-file "$p/sa.key" \
		--service-cluster-ip-range "$SERVICE_CIDR" \
		--node-monitor-period 2s --node-monitor-grace-period 2m \
		--kube-api-qps 100 --kube-api-burst 200 --v=1
	launch kube-scheduler --kubeconfig "$DIR/scheduler.kubeconfig" \
		--authentication-kubeconfig "$DIR/scheduler.kubeconfig" \
		--authorization-kubeconfig "$DIR/scheduler.kubeconfig" \
		--bind-address 127.0.0.1 --secure-port "$SCHED_PORT" --cert-dir "$DIR/pki/scheduler" \
		--leader-elect=false --v=1

	# kwok manages only nodes carrying its annotation; the stage files make them Ready and keep
	# them so, and make pods scheduled on them Ready.
	local f first=1
	for f in "$ROOT"/tests/k8s/stages/*.yaml; do
		((first)) || printf -- '---\n'
		first=0
		cat "$f"
	done >"$DIR/kwok.yaml"
	launch kwok --kubeconfig "$DIR/kubeconfig" --config "$DIR/kwok.yaml" \
		--manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
		--server-address "127.0.0.1:$KWOK_PORT" --node-ip 10.0.1.1 --cidr "$POD_CIDR"
	kubectl apply -f - >/dev/null <<EOF || fail_start kube-apiserver "could not create node $NODE"
apiVersion: v1
kind: Node
metadata:
  name: $NODE
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: $NODE
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
EOF
	wait_until 30 kwok node_ready
	log "node $NODE Ready after $((SECONDS - t0)) s"

	# The proof that scheduler, controllers and kwok work together: a Deployment's pod turns Ready.
	kubectl create namespace pulse-k8s-smoke >/dev/null
	wait_until 30 kube-controller-manager sa_ready pulse-k8s-smoke
	kubectl -n pulse-k8s-smoke create deployment smoke --image=registry.invalid/smoke:1 >/dev/null
	wait_until 60 kube-scheduler smoke_ready
	kubectl delete namespace pulse-k8s-smoke --wait=false >/dev/null
	log "cluster ready in $((SECONDS - t0)) s (a Deployment's pod turned Ready; logs: $DIR/logs)"
	cmd_env
}

have_cmd() { command -v "$1" >/dev/null 2>&1; }

cmd_env() {
	[[ -f $DIR/kubeconfig ]] || die "no cluster in $DIR (run: scripts/k8s-cluster.sh start $DIR)"
	printf 'export KUBECONFIG=%q\n' "$DIR/kubeconfig"
	printf 'export PULSE_K8S_CLUSTER=1\n'
	[[ ! -f $DIR/run/bin ]] || printf 'export PULSE_K8S_BIN=%q\n' "$(cat "$DIR/run/bin")"
}

main() {
	[[ $# -eq 2 ]] || usage
	mkdir -p "$2"
	DIR="$(cd "$2" && pwd)"
	case "$1" in
	start) cmd_start ;;
	stop) cmd_stop ;;
	env) cmd_env ;;
	*) usage ;;
	esac
}

main "$@"
