{{/* Helpers of the PodMonitor and the PrometheusRule (SLOs and tenant alerts). */}}

{{/* Base of the alerts' `runbook_url`: the chart README, whose Runbook has one heading per alert. */}}
{{- define "pulse.runbookUrl" -}}
{{- default (printf "%s/blob/main/charts/pulse/README.md" (trimSuffix "/" .Chart.Home)) .Values.metrics.prometheusRule.runbookUrl -}}
{{- end -}}

{{/*
The `le` label of the latency bucket at an SLO threshold, as the services expose it (the Rust
client prints whole bounds with one decimal: le="1.0"); fails on a value that is no bound.
Arguments: dict "service" <booking|ordering> "slo" <.Values.slo.<service>>.
*/}}
{{- define "pulse.sloLatencyLe" -}}
{{- $bounds := dict "0.005" "0.005" "0.01" "0.01" "0.025" "0.025" "0.05" "0.05" "0.1" "0.1" "0.2" "0.2" "0.3" "0.3" "0.5" "0.5" "1" "1.0" "2.5" "2.5" "5" "5.0" "10" "10.0" -}}
{{- $raw := .slo.latency.thresholdSeconds -}}
{{- $key := toString (float64 $raw) -}}
{{- if not (hasKey $bounds $key) -}}
{{- fail (printf "slo.%s.latency.thresholdSeconds is %v: it must be one of the bucket bounds of pulse_http_request_duration_seconds (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2.5, 5 or 10 seconds), since slow requests are counted as _count - _bucket{le=threshold}. Set the nearest bound (e.g. 0.3 or 0.5), or turn the SLO off with slo.%s.enabled=false" .service $raw .service) -}}
{{- end -}}
{{- index $bounds $key -}}
{{- end -}}

{{/* Fails with an actionable message on SLO values the rules cannot be made from. */}}
{{- define "pulse.validateSlo" -}}
{{- $period := .Values.slo.periodDays -}}
{{- if or (lt (float64 $period) 3.0) (ne (float64 $period) (floor (float64 $period))) -}}
{{- fail (printf "slo.periodDays is %v: give a whole number of days, at least 3 (the longest alerting window is 3 days); 30 is usual" $period) -}}
{{- end -}}
{{- range $service := list "booking" "ordering" -}}
{{- $slo := index $.Values.slo $service -}}
{{- if $slo.enabled -}}
{{- range $sli := list "availability" "latency" -}}
{{- $objective := (index $slo $sli).objective -}}
{{- if not (and (gt (float64 $objective) 0.0) (lt (float64 $objective) 100.0)) -}}
{{- fail (printf "slo.%s.%s.objective is %v: give a percentage above 0 and below 100, e.g. 99.9 (100 leaves no error budget to alert on)" $service $sli $objective) -}}
{{- end -}}
{{- end -}}
{{- $_ := include "pulse.sloLatencyLe" (dict "service" $service "slo" $slo) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Burn-rate factor of a window as a PromQL number: the share of the error budget (per mille)
spent within `hours`, for a budget of `days` days. 30 days: 20 ‰ in 1 h → 14.4, 50 ‰ in 6 h → 6,
100 ‰ in 24 h → 3, 100 ‰ in 72 h → 1.
*/}}
{{- define "pulse.burnRate" -}}
{{- printf "%g" (divf (mul .permille .days 24) (mul 1000 .hours)) -}}
{{- end -}}
