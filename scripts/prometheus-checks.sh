#!/usr/bin/env bash
# Checks the Prometheus side of the chart with real tools, no cluster needed:
#   - `helm template` of charts/pulse with default values renders no monitoring object;
#   - with the PrometheusRule and the monitors enabled, every PrometheusRule's spec passes
#     `promtool check rules`, every alert has a severity (critical or warning), a summary, a
#     description and a runbook_url whose anchor is a heading of the chart README's Runbook;
#   - the unit tests tests/prometheus/*.test.yaml pass `promtool test rules` against those rules,
#     and every alert has a case where it fires and one where it stays quiet;
#   - the PodMonitor selects the tenants' pods and sets `country` from `pulse.dev/tenant`;
#   - SLO values: a whole-second latency threshold selects the bucket as the services print it
#     (le="1.0"), a disabled SLO renders no rule, and a threshold that is no bucket bound or an
#     objective of 100 makes `helm template` fail with the chart's message.
# promtool comes with the Debian package `prometheus` (./dev test installs it); helm is $PULSE_HELM
# or the one scripts/k8s-checks.sh installs; the YAML is read by a python3 with PyYAML (the
# system's, or the venv of scripts/k8s-checks.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

: "${HOME:=$(cd ~ && pwd)}"
PULSE_CACHE="${PULSE_CACHE:-$HOME/.cache/pulse}"
CHART=charts/pulse
TESTS=tests/prometheus
# The rendered rules file the unit tests name in `rule_files`.
RULES_FILE=pulse-rules.yaml
# Values that turn every monitoring object of the chart on.
MONITORING=(--set metrics.prometheusRule.enabled=true --set metrics.podMonitor.enabled=true
	--set metrics.serviceMonitor.enabled=true)

log() { printf 'prometheus-checks: %s\n' "$*" >&2; }
die() {
	printf 'prometheus-checks: error: %s\n' "$*" >&2
	exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }

FAILED=0
fail() {
	printf 'prometheus-checks: FAILED: %s\n' "$*" >&2
	FAILED=1
}

# ---------------------------------------------------------------- tools

# Sets HELM: $PULSE_HELM, else the helm scripts/k8s-checks.sh installs into the cache.
find_helm() {
	if [[ -n ${PULSE_HELM:-} ]]; then
		[[ -x $PULSE_HELM ]] || die "PULSE_HELM=$PULSE_HELM is not an executable"
		HELM="$PULSE_HELM"
	else
		HELM="$("$ROOT/scripts/k8s-checks.sh" helm)" || die "cannot install helm (scripts/k8s-checks.sh helm)"
	fi
}

# Sets PY: a python3 that can import yaml.
find_python() {
	local candidate
	for candidate in python3 "$PULSE_CACHE/k8s-tools/venv/bin/python3"; do
		if "$candidate" -c 'import yaml' >/dev/null 2>&1; then
			PY="$candidate"
			return 0
		fi
	done
	die "no python3 with PyYAML: apt-get install python3-yaml (or run scripts/k8s-checks.sh once, whose venv has it)"
}

# ---------------------------------------------------------------- checks

# render OUT ARGS...: helm template of the chart into OUT; its stderr into OUT.log.
render() {
	local out="$1"
	shift
	"$HELM" template pulse "$CHART" --namespace pulse-system "$@" >"$out" 2>"$out.log"
}

# Rendered chart → plain rules file, and the checks on the rendered objects (see the PY part).
extract() {
	"$PY" - "$@" <<'PY'
import re, sys, yaml

chart, rules_out, readme = sys.argv[1:4]
docs = [d for d in yaml.safe_load_all(open(chart)) if d]
bad = 0
def fail(msg):
    global bad
    print(f"  {msg}", file=sys.stderr)
    bad = 1

groups = []
for doc in docs:
    if doc.get("kind") == "PrometheusRule":
        groups.extend(doc["spec"]["groups"])
if not groups:
    fail("no PrometheusRule rendered")
with open(rules_out, "w") as f:
    yaml.safe_dump({"groups": groups}, f, sort_keys=False, width=1000)

# Headings of the README's Runbook section, as GitHub anchors.
text = open(readme).read()
runbook = text.split("\n## Runbook", 1)
anchors = set()
if len(runbook) < 2:
    fail(f"{readme} has no '## Runbook' section")
else:
    section = runbook[1].split("\n## ", 1)[0]
    for heading in re.findall(r"^#{3,4} +(.+?) *$", section, re.M):
        anchor = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(anchor)

alerts = records = 0
for group in groups:
    for rule in group["rules"]:
        if "record" in rule:
            records += 1
            continue
        alerts += 1
        name = rule["alert"]
        severity = rule.get("labels", {}).get("severity")
        if severity not in ("critical", "warning"):
            fail(f"{name}: severity {severity!r}, not critical or warning")
        notes = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            if not str(notes.get(key, "")).strip():
                fail(f"{name}: no {key} annotation")
        url = str(notes.get("runbook_url", ""))
        anchor = url.rsplit("#", 1)[-1] if "#" in url else ""
        if anchor != name.lower():
            fail(f"{name}: runbook_url {url!r} does not end with #{name.lower()}")
        elif anchor not in anchors:
            fail(f"{name}: {readme} has no Runbook heading '{name}' (anchor #{anchor})")
print(f"prometheus-checks: {len(groups)} rule groups, {records} recording rules, {alerts} alerts", file=sys.stderr)

monitors = [d for d in docs if d.get("kind") == "PodMonitor"]
if len(monitors) != 1:
    fail(f"{len(monitors)} PodMonitor(s) rendered, want 1")
else:
    spec = monitors[0]["spec"]
    want = {"app.kubernetes.io/managed-by": "pulse-operator", "app.kubernetes.io/part-of": "pulse"}
    if spec.get("selector", {}).get("matchLabels") != want:
        fail(f"PodMonitor selects {spec.get('selector')}, want matchLabels {want}")
    if spec.get("namespaceSelector") != {"any": True}:
        fail("PodMonitor does not look in every namespace")
    endpoints = spec.get("podMetricsEndpoints", [])
    ok = any(
        e.get("port") == "admin" and e.get("path") == "/metrics"
        and any(r.get("sourceLabels") == ["__meta_kubernetes_pod_label_pulse_dev_tenant"]
                and r.get("targetLabel") == "country" for r in e.get("relabelings", []))
        for e in endpoints)
    if not ok:
        fail("PodMonitor has no endpoint on port admin, /metrics, with country from pulse.dev/tenant")
if not any(d.get("kind") == "ServiceMonitor" for d in docs):
    fail("the operator's ServiceMonitor is not rendered")
sys.exit(bad)
PY
}

# Every alert of the rules file has a unit test where it fires and one where it does not.
coverage() {
	"$PY" - "$@" <<'PY'
import sys, yaml

rules_file, *tests = sys.argv[1:]
alerts = [r["alert"] for g in yaml.safe_load(open(rules_file))["groups"] for r in g["rules"] if "alert" in r]
fires, quiet = set(), set()
groups = cases = exprs = 0
for path in tests:
    for test in yaml.safe_load(open(path)).get("tests", []):
        groups += 1
        exprs += len(test.get("promql_expr_test", []))
        for case in test.get("alert_rule_test", []):
            cases += 1
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
bad = 0
for name in alerts:
    for kind, seen in (("fires", fires), ("stays quiet", quiet)):
        if name not in seen:
            print(f"  {name}: no unit test where it {kind}", file=sys.stderr)
            bad = 1
for name in sorted((fires | quiet) - set(alerts)):
    print(f"  unit tests name {name}, which is no rendered alert", file=sys.stderr)
    bad = 1
print(f"prometheus-checks: {len(tests)} test files, {groups} test groups, {cases} alert cases "
      f"({len(fires)} alerts fire, {len(quiet)} stay quiet), {exprs} PromQL cases", file=sys.stderr)
sys.exit(bad)
PY
}

# refuse NAME MESSAGE ARGS...: helm template with ARGS must fail and print MESSAGE.
refuse() {
	local name="$1" message="$2"
	shift 2
	if render "$WORK/refused.yaml" "$@"; then
		fail "helm template accepted $name"
	elif ! grep -qF -- "$message" "$WORK/refused.yaml.log"; then
		cat "$WORK/refused.yaml.log" >&2
		fail "helm template refused $name, but without the message '$message'"
	fi
}

main() {
	have promtool || die "promtool not found: install the Debian package prometheus (./dev test does)"
	find_helm
	find_python
	log "tools: helm $("$HELM" version --short 2>/dev/null), $(promtool --version 2>&1 | head -n 1), $("$PY" --version 2>&1)"

	WORK="$(mktemp -d)"
	trap 'rm -rf "$WORK"' EXIT

	log "helm template $CHART (default values): no monitoring object"
	if render "$WORK/default.yaml"; then
		if grep -Eq '^kind: (PrometheusRule|PodMonitor|ServiceMonitor)$' "$WORK/default.yaml"; then
			fail "default values render monitoring objects (they need the Prometheus Operator CRDs)"
		fi
	else
		cat "$WORK/default.yaml.log" >&2
		fail "helm template $CHART with default values"
	fi

	log "helm template $CHART with the PrometheusRule, PodMonitor and ServiceMonitor"
	render "$WORK/chart.yaml" "${MONITORING[@]}" || {
		cat "$WORK/chart.yaml.log" >&2
		die "helm template $CHART with monitoring enabled failed"
	}
	log "PrometheusRule spec → $RULES_FILE; annotations, runbook anchors in $CHART/README.md, PodMonitor"
	extract "$WORK/chart.yaml" "$WORK/$RULES_FILE" "$CHART/README.md" || fail "rendered monitoring objects (see above)"

	log "promtool check rules"
	promtool check rules "$WORK/$RULES_FILE" >"$WORK/check.log" 2>&1 || {
		cat "$WORK/check.log" >&2
		fail "promtool check rules"
	}
	grep -v -e "^Checking " -e '^ *$' "$WORK/check.log" | sed 's/^ */  /' >&2 || true

	local tests=() file
	for file in "$TESTS"/*.test.yaml; do
		[[ -e $file ]] || continue
		cp "$file" "$WORK/"
		tests+=("$WORK/$(basename "$file")")
	done
	if ((${#tests[@]} == 0)); then
		fail "no unit tests in $TESTS/*.test.yaml"
	else
		log "unit tests cover every alert (fires and stays quiet)"
		coverage "$WORK/$RULES_FILE" "${tests[@]}" || fail "alerts without unit tests (see above)"
		log "promtool test rules ${TESTS}/*.test.yaml"
		(cd "$WORK" && promtool test rules "${tests[@]##*/}") >"$WORK/test.log" 2>&1 || {
			cat "$WORK/test.log" >&2
			fail "promtool test rules"
		}
		grep -E 'Unit Testing|SUCCESS' "$WORK/test.log" | sed 's/^ */  /' >&2 || true
	fi

	log "SLO values: whole-second threshold, disabled SLO, refused values"
	if render "$WORK/whole.yaml" "${MONITORING[@]}" --set slo.ordering.latency.thresholdSeconds=1 \
		--set slo.booking.latency.thresholdSeconds=2.5; then
		grep -q 'component="ordering",le="1.0"' "$WORK/whole.yaml" ||
			fail 'thresholdSeconds=1 does not select le="1.0" (how the services print the bucket)'
		grep -q 'component="booking",le="2.5"' "$WORK/whole.yaml" ||
			fail 'thresholdSeconds=2.5 does not select le="2.5"'
	else
		cat "$WORK/whole.yaml.log" >&2
		fail "helm template with slo.ordering.latency.thresholdSeconds=1"
	fi
	# A disabled SLO renders no rule, and its values are not checked.
	if render "$WORK/off.yaml" "${MONITORING[@]}" --set slo.ordering.enabled=false \
		--set slo.ordering.latency.thresholdSeconds=0.25; then
		if grep -q 'component="ordering"' "$WORK/off.yaml"; then
			fail "slo.ordering.enabled=false still renders ordering's SLO rules"
		fi
		grep -q 'PulseBookingAvailabilityFastBurn' "$WORK/off.yaml" ||
			fail "slo.ordering.enabled=false also removed booking's SLO alerts"
	else
		cat "$WORK/off.yaml.log" >&2
		fail "helm template with slo.ordering.enabled=false"
	fi
	# Refused with default values (monitors off) too: a wrong value is caught before it is used.
	refuse "slo.booking.latency.thresholdSeconds=0.25" \
		"slo.booking.latency.thresholdSeconds is 0.25: it must be one of the bucket bounds" \
		--set slo.booking.latency.thresholdSeconds=0.25
	refuse "slo.ordering.latency.thresholdSeconds=0.4 with the rules enabled" \
		"slo.ordering.latency.thresholdSeconds is 0.4: it must be one of the bucket bounds" \
		"${MONITORING[@]}" --set slo.ordering.latency.thresholdSeconds=0.4
	refuse "slo.booking.availability.objective=100" \
		"slo.booking.availability.objective is 100: give a percentage above 0 and below 100" \
		--set slo.booking.availability.objective=100
	refuse "slo.periodDays=1" "slo.periodDays is 1: give a whole number of days, at least 3" \
		--set slo.periodDays=1

	if ((FAILED)); then
		die "Prometheus checks failed"
	fi
	log "all Prometheus checks passed"
}

main "$@"
