#!/usr/bin/env python3
"""Generates Pulse's Grafana dashboards into charts/pulse/dashboards/, one JSON file each.

The chart ships every file of that folder as a ConfigMap for Grafana's dashboard sidecar
(templates/dashboards.yaml); the files can also be imported by hand. The JSON is generated,
never edited: change this script and run it. Python >= 3.11, standard library only.

Usage:
    dashboards.py            write charts/pulse/dashboards/*.json (and remove stale ones)
    dashboards.py --check    exit 1, naming the files, when the folder differs from what this
                             script generates (./dev lint and ./dev test run it)
    dashboards.py --queries  print one JSON line per panel target of every dashboard, in order:
                             {"dashboard": <title>, "panel": <title>, "expr": <PromQL>}

Queries use Grafana's variables `$__rate_interval`, `$country` (tenant series, `=~`, `.*` for
all) and, on the operator dashboard, `$namespace` (`=~`, `.*` for all, which also matches series
without the label, as in a local run). Every panel sums rates by labels rather than filtering
on values, so that it shows a series on a freshly started Pulse; only metrics of METRICS below
(Pulse's metric contract) may appear, and the script refuses to generate anything else.

Dashboards: Grafana JSON model, schemaVersion 39 (Grafana 10 and 11).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "charts" / "pulse" / "dashboards"

# Grafana keeps a ConfigMap's data under 1 MiB; the chart puts one dashboard in each.
MAX_BYTES = 512 * 1024

# Pulse's metric contract, as Prometheus scrapes it (counters end in _total; histograms are
# listed by their _bucket/_sum/_count series). A query naming anything else is refused.
HISTOGRAMS = {
    "pulse_http_request_duration_seconds",
    "pulse_notifier_delivery_delay_seconds",
    "pulse_operator_reconcile_duration_seconds",
}
METRICS = {
    # HTTP (component, route, method, status)
    "pulse_http_requests_total",
    "pulse_rate_limited_requests_total",
    "pulse_rate_limit_unavailable_total",
    "pulse_rate_limit_leases_total",
    # booking
    "pulse_booking_appointments_total",
    "pulse_booking_slot_lock_bypassed_total",
    "pulse_booking_search_db_queries_total",
    "pulse_booking_search_cache_hits_total",
    # marketing
    "pulse_marketing_seckill_attempts_total",
    # ordering
    "pulse_ordering_orders_total",
    "pulse_ordering_webhooks_refused_total",
    "pulse_ordering_orders_expired_total",
    "pulse_ordering_reservations_created_total",
    "pulse_ordering_reservations_duplicate_total",
    "pulse_ordering_reservations_failures_total",
    "pulse_ordering_reservations_claimed_total",
    "pulse_ordering_reservations_dead_lettered_total",
    "pulse_ordering_marketing_breaker_open",
    # notifier
    "pulse_notifier_sent_total",
    "pulse_notifier_dead_letters",
    "pulse_notifier_breaker_open",
    # identity
    "pulse_identity_users_registered_total",
    "pulse_identity_wrong_codes_total",
    "pulse_identity_refresh_reuse_detected_total",
    # event backbone
    "pulse_outbox_published_events_total",
    "pulse_outbox_publish_failures_total",
    "pulse_outbox_publish_lag_seconds",
    "pulse_consumer_lag_records",
    "pulse_consumer_handled_records_total",
    "pulse_consumer_handler_failures_total",
    "pulse_consumer_dead_lettered_records_total",
    "pulse_consumer_fetch_failures_total",
    "pulse_consumer_partitions_owned",
    # dependencies
    "pulse_dependency_up",
    "pulse_db_pool_connections",
    "pulse_db_pool_max_connections",
    "pulse_redis_errors_total",
    "pulse_redis_breaker_state",
    "pulse_redis_breaker_rejected_calls_total",
    # operator
    "pulse_operator_reconciliations_total",
    "pulse_operator_reconcile_failures_total",
    "pulse_operator_tenant_applies_total",
    "pulse_operator_leader",
} | {f"{h}_{s}" for h in HISTOGRAMS for s in ("bucket", "sum", "count")}

RATE = "$__rate_interval"
COUNTRY = 'country=~"$country"'
NAMESPACE = 'namespace=~"$namespace"'
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
HTTP = "pulse_http_requests_total"
LATENCY = "pulse_http_request_duration_seconds"

# ---------------------------------------------------------------- query helpers


def sel(metric: str, *matchers: str, scope: str = COUNTRY) -> str:
    """`metric{scope,matchers...}`: every selector carries the dashboard's scope."""
    return f"{metric}{{{','.join((scope, *matchers))}}}"


def rate(metric: str, *matchers: str, scope: str = COUNTRY, window: str = RATE) -> str:
    return f"rate({sel(metric, *matchers, scope=scope)}[{window}])"


def sum_rate(by: str, metric: str, *matchers: str, scope: str = COUNTRY, window: str = RATE) -> str:
    return f"sum by ({by}) ({rate(metric, *matchers, scope=scope, window=window)})"


def quantile(q: float, by: str, histogram: str, *matchers: str, scope: str = COUNTRY) -> str:
    return (
        f"histogram_quantile({q},"
        f" {sum_rate(f'{by}, le', histogram + '_bucket', *matchers, scope=scope)})"
    )


def ratio(numerator: str, denominator: str) -> str:
    return f"{numerator} / {denominator}"


def error_ratio(by: str, *matchers: str, window: str = RATE) -> str:
    """Share of 5xx responses among all, per `by`. A group that served requests but never a
    5xx has no 5xx series: its numerator is then its own total times 0, so the ratio reads 0
    there instead of the group vanishing (groups without any request stay absent)."""
    total = sum_rate(by, HTTP, *matchers, window=window)
    errors = sum_rate(by, HTTP, *matchers, 'status=~"5.."', window=window)
    return f"({errors} or {total} * 0) / {total}"


# ---------------------------------------------------------------- panels


def target(expr: str, legend: str = "", ref: str = "A", *, table: bool = False) -> dict:
    t = {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not table,
        "instant": table,
        "refId": ref,
    }
    if table:
        t["format"] = "table"
    return t


def targets(*pairs: tuple[str, str]) -> list[dict]:
    return [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(pairs)]


def thresholds(*steps: tuple[float | None, str]) -> dict:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in steps]}


NEUTRAL = thresholds((None, "green"))


def value_mappings(texts: dict[int, tuple[str, str]]) -> list[dict]:
    return [
        {
            "type": "value",
            "options": {
                str(v): {"text": text, "color": color, "index": i}
                for i, (v, (text, color)) in enumerate(sorted(texts.items()))
            },
        }
    ]


BREAKER = {0: ("closed", "green"), 1: ("open", "red")}
REDIS_BREAKER = {0: ("closed", "green"), 1: ("half-open", "orange"), 2: ("open", "red")}
UP = {0: ("down", "red"), 1: ("up", "green")}
LEADER = {0: ("standby", "blue"), 1: ("leader", "green")}


def timeseries(
    title: str,
    description: str,
    tgts: list[dict],
    unit: str,
    *,
    w: int = 12,
    h: int = 8,
    min_: float | None = 0,
    max_: float | None = None,
    steps: dict | None = None,
    threshold_line: bool = False,
    mappings: list | None = None,
    stepped: bool = False,
) -> dict:
    custom = {
        "axisBorderShow": False,
        "axisCenteredZero": False,
        "axisColorMode": "text",
        "axisLabel": "",
        "axisPlacement": "auto",
        "barAlignment": 0,
        "drawStyle": "line",
        "fillOpacity": 10,
        "gradientMode": "none",
        "hideFrom": {"legend": False, "tooltip": False, "viz": False},
        "insertNulls": False,
        "lineInterpolation": "stepAfter" if stepped else "linear",
        "lineWidth": 1,
        "pointSize": 4,
        "scaleDistribution": {"type": "linear"},
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"group": "A", "mode": "none"},
        "thresholdsStyle": {"mode": "line+area" if threshold_line else "off"},
    }
    defaults = {
        "color": {"mode": "palette-classic"},
        "custom": custom,
        "mappings": mappings or [],
        "thresholds": steps or NEUTRAL,
        "unit": unit,
    }
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {
                "calcs": ["mean", "max", "lastNotNull"],
                "displayMode": "table",
                "placement": "bottom",
                "showLegend": True,
                "sortBy": "Max",
                "sortDesc": True,
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": tgts,
        "_size": (w, h),
    }


def stat(
    title: str,
    description: str,
    tgts: list[dict],
    unit: str,
    *,
    w: int = 6,
    h: int = 5,
    steps: dict | None = None,
    mappings: list | None = None,
    overrides: list | None = None,
    graph: bool = True,
) -> dict:
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {
            "defaults": {
                "color": {"mode": "thresholds"},
                "mappings": mappings or [],
                "thresholds": steps or NEUTRAL,
                "unit": unit,
            },
            "overrides": overrides or [],
        },
        "options": {
            "colorMode": "value",
            "graphMode": "area" if graph else "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showPercentChange": False,
            "textMode": "value_and_name",
            "wideLayout": True,
        },
        "targets": tgts,
        "_size": (w, h),
    }


def table(
    title: str,
    description: str,
    columns: list[tuple[str, str, str]],
    by: list[str],
    *,
    w: int = 24,
    h: int = 9,
) -> dict:
    """An instant table: one row per `by` combination, one column per (name, unit, expr),
    joined by Grafana's merge transformation."""
    tgts = [
        target(expr, "", chr(ord("A") + i), table=True) for i, (_, _, expr) in enumerate(columns)
    ]
    rename = {f"Value #{chr(ord('A') + i)}": name for i, (name, _, _) in enumerate(columns)}
    order = {label: i for i, label in enumerate(by)}
    order.update({name: len(by) + i for i, (name, _, _) in enumerate(columns)})
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {
            "defaults": {
                "custom": {"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False},
                "mappings": [],
                "thresholds": NEUTRAL,
            },
            "overrides": [
                {
                    "matcher": {"id": "byName", "options": name},
                    "properties": [{"id": "unit", "value": unit}, {"id": "decimals", "value": 3}],
                }
                for name, unit, _ in columns
            ],
        },
        "options": {
            "cellHeight": "sm",
            "footer": {"countRows": False, "fields": "", "reducer": ["sum"], "show": False},
            "showHeader": True,
            "sortBy": [{"desc": True, "displayName": columns[0][0]}],
        },
        "targets": tgts,
        "transformations": [
            {"id": "merge", "options": {}},
            {
                "id": "organize",
                "options": {
                    "excludeByName": {"Time": True},
                    "indexByName": order,
                    "renameByName": rename,
                },
            },
        ],
        "_size": (w, h),
    }


def row(title: str, *panels: dict) -> tuple[str, tuple[dict, ...]]:
    return (title, panels)


# ---------------------------------------------------------------- variables


def datasource_variable() -> dict:
    return {
        "current": {},
        "hide": 0,
        "includeAll": False,
        "label": "Data source",
        "multi": False,
        "name": "datasource",
        "options": [],
        "query": "prometheus",
        "refresh": 1,
        "regex": "",
        "skipUrlSync": False,
        "type": "datasource",
    }


def label_variable(name: str, label: str, query: str) -> dict:
    return {
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "datasource": DATASOURCE,
        "definition": query,
        "hide": 0,
        "includeAll": True,
        "label": label,
        "multi": True,
        "name": name,
        "options": [],
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "regex": "",
        "skipUrlSync": False,
        "sort": 1,
        "type": "query",
    }


COUNTRY_VARIABLE = label_variable("country", "Country", f"label_values({HTTP}, country)")
NAMESPACE_VARIABLE = label_variable(
    "namespace", "Namespace", "label_values(pulse_operator_leader, namespace)"
)

# ---------------------------------------------------------------- dashboards

REQ = "reqps"
OPS = "ops"


def country_overview() -> tuple[dict, list]:
    route = "country, component, route"
    appointments = "pulse_booking_appointments_total"
    seckill = "pulse_marketing_seckill_attempts_total"
    orders = "pulse_ordering_orders_total"
    slo = 'component=~"booking|ordering"'
    pay = ('component="ordering"', 'method="POST"', 'route="/v1/orders/{id}/pay"')
    rows = [
        row(
            "At a glance",
            stat(
                "Requests",
                "HTTP requests per second, all components.",
                targets((sum_rate("country", HTTP), "{{country}}")),
                REQ,
                w=4,
            ),
            stat(
                "5xx ratio",
                "Share of HTTP responses with a 5xx status.",
                targets((error_ratio("country"), "{{country}}")),
                "percentunit",
                w=4,
                steps=thresholds((None, "green"), (0.001, "orange"), (0.01, "red")),
            ),
            stat(
                "Latency p99",
                "99th percentile of HTTP request duration, all routes.",
                targets((quantile(0.99, "country", LATENCY), "{{country}}")),
                "s",
                w=4,
                steps=thresholds((None, "green"), (0.3, "orange"), (1, "red")),
            ),
            stat(
                "Bookings",
                "Appointments booked per second.",
                targets((sum_rate("country", appointments, 'outcome="booked"'), "{{country}}")),
                OPS,
                w=4,
            ),
            stat(
                "Orders paid",
                "Orders reaching PAID per second.",
                targets((sum_rate("country", orders, 'status="PAID"'), "{{country}}")),
                OPS,
                w=4,
            ),
            stat(
                "Seckill reservations",
                "Seckill attempts that reserved stock, per second.",
                targets((sum_rate("country", seckill, 'outcome="reserved"'), "{{country}}")),
                OPS,
                w=4,
            ),
        ),
        row(
            "HTTP",
            timeseries(
                "Request rate per route",
                "Requests per second by component and route template.",
                targets((sum_rate(route, HTTP), "{{country}} {{component}} {{route}}")),
                REQ,
            ),
            timeseries(
                "5xx ratio per route",
                "Share of responses with a 5xx status per route (0 for routes that served requests"
                " without a 5xx).",
                targets((error_ratio(route), "{{country}} {{component}} {{route}}")),
                "percentunit",
                steps=thresholds((None, "green"), (0.01, "red")),
                threshold_line=True,
            ),
            *(
                timeseries(
                    f"Latency p{q} per route",
                    f"{q}th percentile of request duration per route (buckets of {LATENCY}).",
                    targets(
                        (quantile(q / 100, route, LATENCY), "{{country}} {{component}} {{route}}")
                    ),
                    "s",
                    w=8,
                )
                for q in (50, 95, 99)
            ),
            timeseries(
                "4xx responses by status",
                "Client errors per second by component and status (401/403 auth, 404, 409"
                " conflicts, 422 validation, 429 rate limited).",
                targets(
                    (
                        sum_rate("country, component, status", HTTP, 'status=~"4.."'),
                        "{{country}} {{component}} {{status}}",
                    )
                ),
                REQ,
            ),
            timeseries(
                "Responses by status",
                "All responses per second by status code.",
                targets((sum_rate("country, status", HTTP), "{{country}} {{status}}")),
                REQ,
            ),
            table(
                "Routes",
                "Per route, over the last rate interval: request rate, 5xx ratio and latency"
                " percentiles.",
                [
                    ("req/s", REQ, sum_rate(route, HTTP)),
                    ("5xx ratio", "percentunit", error_ratio(route)),
                    ("p50", "s", quantile(0.5, route, LATENCY)),
                    ("p95", "s", quantile(0.95, route, LATENCY)),
                    ("p99", "s", quantile(0.99, route, LATENCY)),
                ],
                ["country", "component", "route"],
            ),
        ),
        row(
            "Bookings",
            timeseries(
                "Appointments by outcome",
                "booked, conflict (the slot was taken), cancelled and rescheduled appointments per"
                " second.",
                targets((sum_rate("country, outcome", appointments), "{{country}} {{outcome}}")),
                OPS,
                w=8,
            ),
            timeseries(
                "Booking conflict ratio",
                "Conflicts among booking attempts (conflict / (booked + conflict)); empty while"
                " nobody books.",
                targets(
                    (
                        ratio(
                            sum_rate("country", appointments, 'outcome="conflict"'),
                            sum_rate("country", appointments, 'outcome=~"booked|conflict"'),
                        ),
                        "{{country}}",
                    )
                ),
                "percentunit",
                w=8,
            ),
            timeseries(
                "Availability search",
                "Search queries answered from the cache or the database, and slot locks bypassed"
                " (Redis unavailable: booking relies on the database constraint alone).",
                targets(
                    (
                        sum_rate("country", "pulse_booking_search_cache_hits_total"),
                        "{{country}} cache hits",
                    ),
                    (
                        sum_rate("country", "pulse_booking_search_db_queries_total"),
                        "{{country}} database queries",
                    ),
                    (
                        sum_rate("country", "pulse_booking_slot_lock_bypassed_total"),
                        "{{country}} slot lock bypassed",
                    ),
                ),
                OPS,
                w=8,
            ),
        ),
        row(
            "Seckill",
            timeseries(
                "Seckill attempts by outcome",
                "reserved, sold_out, already_bought, rate_limited, not_started, ended, unknown (no"
                " such campaign) and unavailable (Redis down) per second.",
                targets((sum_rate("country, outcome", seckill), "{{country}} {{outcome}}")),
                OPS,
                w=16,
            ),
            timeseries(
                "Seckill reserved share",
                "Share of seckill attempts that reserved stock; empty while nobody tries.",
                targets(
                    (
                        ratio(
                            sum_rate("country", seckill, 'outcome="reserved"'),
                            sum_rate("country", seckill),
                        ),
                        "{{country}}",
                    )
                ),
                "percentunit",
                w=8,
            ),
        ),
        row(
            "Orders and payments",
            timeseries(
                "Orders reaching each status",
                "Orders entering PENDING_PAYMENT, PAID, CANCELLED and REFUNDED per second; expired"
                " = unpaid orders cancelled at their deadline.",
                targets(
                    (sum_rate("country, status", orders), "{{country}} {{status}}"),
                    (
                        sum_rate("country", "pulse_ordering_orders_expired_total"),
                        "{{country}} expired",
                    ),
                ),
                OPS,
            ),
            timeseries(
                "Payments",
                "Orders paid and refunded per second (as confirmed by the payment provider's"
                " webhook).",
                targets(
                    (
                        sum_rate("country, status", orders, 'status=~"PAID|REFUNDED"'),
                        "{{country}} {{status}}",
                    )
                ),
                OPS,
            ),
            timeseries(
                "Pay requests by status",
                "POST /v1/orders/{id}/pay (starting a checkout) per second by response status.",
                targets((sum_rate("country, status", HTTP, *pay), "{{country}} {{status}}")),
                REQ,
            ),
            timeseries(
                "Refused payment webhooks",
                "Webhook calls refused (bad signature, unknown event or order) per second: many of"
                " them mean a wrong webhook secret or someone probing.",
                targets(
                    (sum_rate("country", "pulse_ordering_webhooks_refused_total"), "{{country}}")
                ),
                OPS,
            ),
        ),
        row(
            "SLO indicators (1 h window)",
            timeseries(
                "Availability, booking and ordering",
                "Share of non-5xx responses over the last hour (raw counters, no recording rule)."
                " The line marks 99.9 %; the chart's `slo:` values hold the targets the alerts"
                " use.",
                targets(
                    (
                        f"1 - {error_ratio('country, component', slo, window='1h')}",
                        "{{country}} {{component}}",
                    )
                ),
                "percentunit",
                min_=None,
                max_=1,
                steps=thresholds((None, "red"), (0.999, "green")),
                threshold_line=True,
            ),
            timeseries(
                "Requests under 300 ms, booking and ordering",
                "Share of requests answered within 300 ms over the last hour (bucket le=0.3). The"
                " line marks 99 % (p99 under 300 ms).",
                targets(
                    (
                        ratio(
                            sum_rate(
                                "country, component",
                                LATENCY + "_bucket",
                                slo,
                                'le="0.3"',
                                window="1h",
                            ),
                            sum_rate("country, component", LATENCY + "_count", slo, window="1h"),
                        ),
                        "{{country}} {{component}}",
                    )
                ),
                "percentunit",
                min_=None,
                max_=1,
                steps=thresholds((None, "red"), (0.99, "green")),
                threshold_line=True,
            ),
        ),
    ]
    return (
        {
            "uid": "pulse-country-overview",
            "title": "Pulse / Country overview",
            "description": (
                "A country's traffic, errors and latency per route, bookings, seckill, orders and"
                " payments."
            ),
            "templating": [COUNTRY_VARIABLE],
        },
        rows,
    )


def event_backbone() -> tuple[dict, list]:
    group = "country, group, topic"
    reservations = [
        ("created", "created"),
        ("duplicate", "duplicate"),
        ("failures", "failed"),
        ("claimed", "claimed"),
        ("dead_lettered", "dead-lettered"),
    ]
    rows = [
        row(
            "At a glance",
            stat(
                "Oldest unpublished event",
                "Worst outbox publish lag of any component (age of the oldest event not yet on"
                " Kafka).",
                targets(
                    (f"max by (country) ({sel('pulse_outbox_publish_lag_seconds')})", "{{country}}")
                ),
                "s",
                steps=thresholds((None, "green"), (30, "orange"), (120, "red")),
            ),
            stat(
                "Consumer lag",
                "Records behind, summed over every group and partition.",
                targets((f"sum by (country) ({sel('pulse_consumer_lag_records')})", "{{country}}")),
                "short",
                steps=thresholds((None, "green"), (1000, "orange"), (10000, "red")),
            ),
            stat(
                "Handler failures",
                "Failed handler attempts per second (each is redelivered).",
                targets(
                    (sum_rate("country", "pulse_consumer_handler_failures_total"), "{{country}}")
                ),
                OPS,
                steps=thresholds((None, "green"), (0.01, "orange")),
            ),
            stat(
                "Dead letters",
                "Kafka records sent to a dead-letter topic per second, all consumer groups.",
                targets(
                    (
                        sum_rate("country", "pulse_consumer_dead_lettered_records_total"),
                        "{{country}}",
                    )
                ),
                OPS,
                steps=thresholds((None, "green"), (0.001, "red")),
            ),
        ),
        row(
            "Outbox",
            timeseries(
                "Events published",
                "Outbox events published to Kafka per second, per component.",
                targets(
                    (
                        sum_rate("country, component", "pulse_outbox_published_events_total"),
                        "{{country}} {{component}}",
                    )
                ),
                OPS,
                w=8,
            ),
            timeseries(
                "Publish failures",
                "Kafka errors while publishing outbox events, per second; events stay in the outbox"
                " and are retried.",
                targets(
                    (
                        sum_rate("country, component", "pulse_outbox_publish_failures_total"),
                        "{{country}} {{component}}",
                    )
                ),
                OPS,
                w=8,
            ),
            timeseries(
                "Publish lag",
                "Age of the oldest event not yet published, per component (0 when the outbox is"
                " empty).",
                targets(
                    (
                        f"max by (country, component) ({sel('pulse_outbox_publish_lag_seconds')})",
                        "{{country}} {{component}}",
                    )
                ),
                "s",
                w=8,
            ),
        ),
        row(
            "Consumers",
            timeseries(
                "Consumer lag per group and partition",
                "Records between a group's position and the partition's high watermark.",
                targets(
                    (
                        (
                            "max by (country, group, topic, partition)"
                            f" ({sel('pulse_consumer_lag_records')})"
                        ),
                        "{{country}} {{group}} {{topic}}[{{partition}}]",
                    )
                ),
                "short",
            ),
            timeseries(
                "Partitions owned",
                "Partitions assigned to each group (summed over its processes); a drop means a"
                " rebalance or a dead consumer.",
                targets(
                    (
                        f"sum by ({group}) ({sel('pulse_consumer_partitions_owned')})",
                        "{{country}} {{group}} {{topic}}",
                    )
                ),
                "short",
                stepped=True,
            ),
            timeseries(
                "Records handled",
                "Records handled successfully per second, per group and topic.",
                targets(
                    (
                        sum_rate(group, "pulse_consumer_handled_records_total"),
                        "{{country}} {{group}} {{topic}}",
                    )
                ),
                OPS,
                w=8,
            ),
            timeseries(
                "Handler failures (redeliveries)",
                "Failed handler attempts per second; each is followed by a redelivery until the"
                " record is dead-lettered.",
                targets(
                    (
                        sum_rate(group, "pulse_consumer_handler_failures_total"),
                        "{{country}} {{group}} {{topic}}",
                    )
                ),
                OPS,
                w=8,
            ),
            timeseries(
                "Dead-lettered records",
                "Records given up on and sent to the dead-letter topic, per second.",
                targets(
                    (
                        sum_rate(group, "pulse_consumer_dead_lettered_records_total"),
                        "{{country}} {{group}} {{topic}}",
                    )
                ),
                OPS,
                w=8,
            ),
        ),
        row(
            "Ordering reservations stream",
            timeseries(
                "Seckill reservations in ordering",
                "Reservations from marketing's stream: orders created, duplicates ignored, failed"
                " attempts, claimed by their buyer and dead-lettered, per second.",
                targets(
                    *(
                        (
                            sum_rate("country", f"pulse_ordering_reservations_{name}_total"),
                            f"{{{{country}}}} {legend}",
                        )
                        for name, legend in reservations
                    )
                ),
                OPS,
                w=24,
            ),
        ),
        row(
            "Notifier",
            timeseries(
                "Notifications sent",
                "Notifications delivered per second by channel and kind.",
                targets(
                    (
                        sum_rate("country, channel, kind", "pulse_notifier_sent_total"),
                        "{{country}} {{channel}} {{kind}}",
                    )
                ),
                OPS,
                w=8,
            ),
            timeseries(
                "Notifier dead letters",
                "Notifications given up on that wait for an administrator, by channel.",
                targets(
                    (
                        f"max by (country, channel) ({sel('pulse_notifier_dead_letters')})",
                        "{{country}} {{channel}}",
                    )
                ),
                "short",
                w=8,
            ),
            timeseries(
                "Notification delivery delay",
                "p50 and p95 of the time from the event to the delivery.",
                targets(
                    (
                        quantile(0.5, "country", "pulse_notifier_delivery_delay_seconds"),
                        "{{country}} p50",
                    ),
                    (
                        quantile(0.95, "country", "pulse_notifier_delivery_delay_seconds"),
                        "{{country}} p95",
                    ),
                ),
                "s",
                w=8,
            ),
        ),
    ]
    return (
        {
            "uid": "pulse-event-backbone",
            "title": "Pulse / Event backbone",
            "description": (
                "Outboxes, Kafka consumers, dead letters, ordering's reservation stream and"
                " notifier deliveries."
            ),
            "templating": [COUNTRY_VARIABLE],
        },
        rows,
    )


def dependencies() -> tuple[dict, list]:
    pool = "pulse_db_pool_connections"
    pool_max = "pulse_db_pool_max_connections"
    in_use = sel(pool, 'state="in_use"')
    rows = [
        row(
            "Health",
            stat(
                "Dependencies",
                "Whether each process reaches PostgreSQL, Redis and Kafka (the worst process"
                " counts).",
                targets(
                    (
                        f"min by (country, dependency) ({sel('pulse_dependency_up')})",
                        "{{country}} {{dependency}}",
                    )
                ),
                "none",
                w=12,
                h=6,
                steps=thresholds((None, "red"), (1, "green")),
                mappings=value_mappings(UP),
                graph=False,
            ),
            timeseries(
                "Dependency up",
                "1 while reachable; the lowest value over a country's processes.",
                targets(
                    (
                        f"min by (country, dependency) ({sel('pulse_dependency_up')})",
                        "{{country}} {{dependency}}",
                    )
                ),
                "none",
                h=6,
                max_=1,
                mappings=value_mappings(UP),
                stepped=True,
            ),
        ),
        row(
            "PostgreSQL pool",
            timeseries(
                "Database pool connections",
                "Connections in use and idle per process, and the pool's maximum.",
                targets(
                    (
                        f"sum by (country, instance, state) ({sel(pool)})",
                        "{{country}} {{instance}} {{state}}",
                    ),
                    (
                        f"sum by (country, instance) ({sel(pool_max)})",
                        "{{country}} {{instance}} max",
                    ),
                ),
                "short",
            ),
            timeseries(
                "Database pool saturation",
                "Connections in use / pool maximum per process; near 100 % requests queue for a"
                " connection.",
                targets(
                    (
                        ratio(
                            f"sum by (country, instance) ({in_use})",
                            f"sum by (country, instance) ({sel(pool_max)})",
                        ),
                        "{{country}} {{instance}}",
                    )
                ),
                "percentunit",
                max_=1,
                steps=thresholds((None, "green"), (0.8, "orange"), (0.95, "red")),
                threshold_line=True,
            ),
        ),
        row(
            "Redis",
            timeseries(
                "Redis errors",
                "Redis calls that failed, per second.",
                targets((sum_rate("country", "pulse_redis_errors_total"), "{{country}}")),
                OPS,
                w=8,
            ),
            timeseries(
                "Redis breaker state",
                "Circuit breaker in front of Redis per process: 0 closed, 1 half-open (probing), 2"
                " open (calls refused at once).",
                targets(
                    (
                        f"max by (country, instance) ({sel('pulse_redis_breaker_state')})",
                        "{{country}} {{instance}}",
                    )
                ),
                "none",
                w=8,
                max_=2,
                mappings=value_mappings(REDIS_BREAKER),
                stepped=True,
            ),
            timeseries(
                "Redis calls rejected by the breaker",
                "Calls not even tried because the breaker was open, per second.",
                targets(
                    (sum_rate("country", "pulse_redis_breaker_rejected_calls_total"), "{{country}}")
                ),
                OPS,
                w=8,
            ),
        ),
        row(
            "Kafka",
            timeseries(
                "Kafka publish errors",
                "Outbox publishes that failed, per second and component (retried from the outbox).",
                targets(
                    (
                        sum_rate("country, component", "pulse_outbox_publish_failures_total"),
                        "{{country}} {{component}}",
                    )
                ),
                OPS,
            ),
            timeseries(
                "Kafka fetch errors",
                "Consumer fetches and commits that failed, per second, group and topic.",
                targets(
                    (
                        sum_rate("country, group, topic", "pulse_consumer_fetch_failures_total"),
                        "{{country}} {{group}} {{topic}}",
                    )
                ),
                OPS,
            ),
        ),
        row(
            "Circuit breakers",
            stat(
                "Breakers now",
                "Redis (per process; half-open = probing), ordering → marketing (per process) and"
                " notifier's channels.",
                targets(
                    (
                        f"max by (country, instance) ({sel('pulse_redis_breaker_state')})",
                        "{{country}} redis {{instance}}",
                    ),
                    (
                        (
                            "max by (country, instance)"
                            f" ({sel('pulse_ordering_marketing_breaker_open')})"
                        ),
                        "{{country}} ordering → marketing {{instance}}",
                    ),
                    (
                        f"max by (country, channel) ({sel('pulse_notifier_breaker_open')})",
                        "{{country}} notifier {{channel}}",
                    ),
                ),
                "none",
                w=12,
                h=7,
                steps=thresholds((None, "green"), (1, "red")),
                mappings=value_mappings(BREAKER),
                overrides=[
                    {
                        "matcher": {"id": "byFrameRefID", "options": "A"},
                        "properties": [
                            {"id": "mappings", "value": value_mappings(REDIS_BREAKER)},
                            {
                                "id": "thresholds",
                                "value": thresholds((None, "green"), (1, "orange"), (2, "red")),
                            },
                        ],
                    }
                ],
                graph=False,
            ),
            timeseries(
                "Breakers open over time",
                "1 while open: ordering's breaker in front of marketing, and notifier's per"
                " channel.",
                targets(
                    (
                        (
                            "max by (country, instance)"
                            f" ({sel('pulse_ordering_marketing_breaker_open')})"
                        ),
                        "{{country}} ordering → marketing {{instance}}",
                    ),
                    (
                        f"max by (country, channel) ({sel('pulse_notifier_breaker_open')})",
                        "{{country}} notifier {{channel}}",
                    ),
                ),
                "none",
                h=7,
                max_=1,
                mappings=value_mappings(BREAKER),
                stepped=True,
            ),
        ),
        row(
            "Rate limiting",
            timeseries(
                "Rate-limited requests",
                "Requests refused with 429 by the per-client limit, per second.",
                targets((sum_rate("country", "pulse_rate_limited_requests_total"), "{{country}}")),
                REQ,
            ),
            timeseries(
                "Requests not rate-checked",
                "Requests let through unchecked because Redis was unavailable, per second.",
                targets((sum_rate("country", "pulse_rate_limit_unavailable_total"), "{{country}}")),
                REQ,
            ),
        ),
    ]
    return (
        {
            "uid": "pulse-dependencies",
            "title": "Pulse / Dependencies",
            "description": (
                "PostgreSQL, Redis and Kafka as Pulse sees them: reachability, pool use, errors,"
                " circuit breakers and rate limiting."
            ),
            "templating": [COUNTRY_VARIABLE],
        },
        rows,
    )


def operator() -> tuple[dict, list]:
    ns = {"scope": NAMESPACE}
    leader = sel("pulse_operator_leader", scope=NAMESPACE)
    replicas = f"max by (namespace, pod, instance) ({leader})"
    rows = [
        row(
            "Leadership",
            stat(
                "Leading replicas",
                "Replicas holding the leader Lease: 1 is right; 0 means nobody reconciles.",
                targets((f"sum by (namespace) ({leader})", "leaders {{namespace}}")),
                "none",
                w=6,
                steps=thresholds((None, "red"), (1, "green"), (2, "red")),
                graph=False,
            ),
            stat(
                "Replicas",
                "Which replica leads; the others stand by.",
                targets((replicas, "{{pod}} {{instance}}")),
                "none",
                w=18,
                mappings=value_mappings(LEADER),
                graph=False,
            ),
            timeseries(
                "Leader over time",
                "1 while a replica holds the Lease: a hand-over shows as a crossing.",
                targets((replicas, "{{pod}} {{instance}}")),
                "none",
                w=24,
                h=6,
                max_=1,
                mappings=value_mappings(LEADER),
                stepped=True,
            ),
        ),
        row(
            "Reconciliations",
            timeseries(
                "Reconciliations per controller",
                "Reconciliations started per second (countrytenant, seckillcampaign).",
                targets(
                    (
                        sum_rate("controller", "pulse_operator_reconciliations_total", **ns),
                        "{{controller}}",
                    )
                ),
                OPS,
            ),
            timeseries(
                "Reconcile failures by error",
                "Failed reconciliations per second by controller and error kind (retried with"
                " backoff).",
                targets(
                    (
                        sum_rate(
                            "controller, error", "pulse_operator_reconcile_failures_total", **ns
                        ),
                        "{{controller}} {{error}}",
                    )
                ),
                OPS,
            ),
            timeseries(
                "Reconcile duration",
                "p50 and p99 of one reconciliation per controller.",
                targets(
                    (
                        quantile(
                            0.5, "controller", "pulse_operator_reconcile_duration_seconds", **ns
                        ),
                        "{{controller}} p50",
                    ),
                    (
                        quantile(
                            0.99, "controller", "pulse_operator_reconcile_duration_seconds", **ns
                        ),
                        "{{controller}} p99",
                    ),
                ),
                "s",
            ),
            timeseries(
                "Tenant applies by reason",
                "Full applies of a tenant's objects per second by reason (never_applied,"
                " desired_changed, periodic, missing, drifted); drifted means something changed the"
                " objects behind the operator's back.",
                targets(
                    (sum_rate("reason", "pulse_operator_tenant_applies_total", **ns), "{{reason}}")
                ),
                OPS,
            ),
        ),
    ]
    return (
        {
            "uid": "pulse-operator",
            "title": "Pulse / Operator",
            "description": (
                "The Pulse operator: leader election, reconciliations, failures, durations and"
                " tenant applies."
            ),
            "templating": [NAMESPACE_VARIABLE],
        },
        rows,
    )


DASHBOARDS = {
    "pulse-country-overview.json": country_overview,
    "pulse-event-backbone.json": event_backbone,
    "pulse-dependencies.json": dependencies,
    "pulse-operator.json": operator,
}

# ---------------------------------------------------------------- assembly


def layout(rows: list) -> list[dict]:
    """Rows (expanded) with their panels placed left to right, wrapping at 24 columns."""
    panels: list[dict] = []
    y = 0
    next_id = 1
    for title, row_panels in rows:
        panels.append(
            {
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "id": next_id,
                "panels": [],
                "title": title,
                "type": "row",
            }
        )
        next_id += 1
        y += 1
        x = 0
        line_height = 0
        for panel in row_panels:
            panel = dict(panel)
            w, h = panel.pop("_size")
            if x + w > 24:
                y += line_height
                x = 0
                line_height = 0
            panel["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
            panel["id"] = next_id
            next_id += 1
            panels.append(panel)
            x += w
            line_height = max(line_height, h)
        y += line_height
    return panels


def dashboard(spec: dict, rows: list) -> dict:
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": spec["description"],
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [
            {
                "asDropdown": True,
                "icon": "external link",
                "includeVars": False,
                "keepTime": True,
                "tags": ["pulse"],
                "targetBlank": False,
                "title": "Pulse dashboards",
                "tooltip": "",
                "type": "dashboards",
                "url": "",
            }
        ],
        "panels": layout(rows),
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": ["pulse"],
        "templating": {"list": [datasource_variable(), *spec["templating"]]},
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": spec["title"],
        "uid": spec["uid"],
        "version": 1,
        "weekStart": "",
    }


# ---------------------------------------------------------------- self-checks

METRIC_RE = re.compile(r"\b(pulse_[a-z0-9_]+)")


def selectors(expr: str):
    """Yields (metric, matcher text) for every `pulse_*` selector, reading quoted label values
    whole (a route template such as `/v1/orders/{id}/pay` holds braces)."""
    i = 0
    while True:
        m = METRIC_RE.search(expr, i)
        if not m:
            return
        i = m.end()
        if i >= len(expr) or expr[i] != "{":
            yield m.group(1), None
            continue
        j = i + 1
        quote = None
        while j < len(expr):
            c = expr[j]
            if quote:
                if c == "\\":
                    j += 1
                elif c == quote:
                    quote = None
            elif c in "\"'`":
                quote = c
            elif c == "}":
                break
            j += 1
        yield m.group(1), expr[i + 1 : j]
        i = j + 1


def problems(docs: dict[str, dict]) -> list[str]:
    found = []
    uids = set()
    for name, doc in docs.items():
        if doc["uid"] in uids:
            found.append(f"{name}: uid {doc['uid']} used twice")
        uids.add(doc["uid"])
        titles = set()
        for panel in doc["panels"]:
            if panel["type"] == "row":
                continue
            where = f"{name}: panel {panel['title']!r}"
            if panel["title"] in titles:
                found.append(f"{where}: title used twice")
            titles.add(panel["title"])
            if not panel.get("targets"):
                found.append(f"{where}: no query")
            for t in panel.get("targets", []):
                expr = t["expr"]
                if "vector(" in expr:
                    found.append(f"{where}: vector() hides missing series")
                for window in re.findall(r"\[([^\]]+)\]", expr):
                    if window not in (RATE, "1h"):
                        found.append(f"{where}: window [{window}], use [{RATE}]")
                for metric, matchers in selectors(expr):
                    if metric not in METRICS:
                        found.append(f"{where}: {metric} is not in Pulse's metric contract")
                    scope = NAMESPACE if metric.startswith("pulse_operator_") else COUNTRY
                    if matchers is None or scope not in matchers:
                        found.append(f"{where}: {metric} without {{{scope}}}")
        if len(render(doc).encode()) > MAX_BYTES:
            found.append(f"{name}: over {MAX_BYTES} bytes (one ConfigMap holds one dashboard)")
    return found


# ---------------------------------------------------------------- output


def render(doc: dict) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def generate() -> dict[str, dict]:
    docs = {}
    for name, build in DASHBOARDS.items():
        spec, rows = build()
        docs[name] = dashboard(spec, rows)
    return docs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--check", action="store_true", help="fail when charts/pulse/dashboards/ is stale"
    )
    mode.add_argument(
        "--queries", action="store_true", help="print every panel query as JSON lines"
    )
    args = parser.parse_args()

    docs = generate()
    found = problems(docs)
    if found:
        for line in found:
            print(f"dashboards.py: {line}", file=sys.stderr)
        return 2

    if args.queries:
        for doc in docs.values():
            for panel in doc["panels"]:
                for t in panel.get("targets", []):
                    print(
                        json.dumps(
                            {"dashboard": doc["title"], "panel": panel["title"], "expr": t["expr"]},
                            ensure_ascii=False,
                        )
                    )
        return 0

    wanted = {name: render(doc) for name, doc in docs.items()}
    present = {p.name for p in OUT.glob("*.json")} if OUT.is_dir() else set()
    rel = OUT.relative_to(ROOT)
    if args.check:
        stale = sorted(
            n
            for n in wanted
            if n not in present or (OUT / n).read_text(encoding="utf-8") != wanted[n]
        )
        extra = sorted(present - wanted.keys())
        for n in stale:
            print(
                f"dashboards.py: {rel / n} differs from what scripts/dashboards.py generates",
                file=sys.stderr,
            )
        for n in extra:
            print(
                f"dashboards.py: {rel / n} is not generated by scripts/dashboards.py",
                file=sys.stderr,
            )
        if stale or extra:
            print("dashboards.py: run scripts/dashboards.py and commit the result", file=sys.stderr)
            return 1
        print(f"dashboards.py: {len(wanted)} dashboards in {rel} are up to date", file=sys.stderr)
        return 0

    OUT.mkdir(parents=True, exist_ok=True)
    for n in sorted(present - wanted.keys()):
        (OUT / n).unlink()
        print(f"dashboards.py: removed {rel / n}", file=sys.stderr)
    for n, text in wanted.items():
        path = OUT / n
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"dashboards.py: wrote {rel / n}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
