#!/usr/bin/env python3
"""Writes assets/grafana/fraiseql.json (embedded in the binary). Edit panels here, run it, commit both."""
import os
os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import json
panels=[]
DS={"type":"prometheus","uid":"${datasource}"}
def panel(title, exprs, unit="short", x=0, y=0, w=12, h=8, kind="timeseries"):
    panels.append({
      "id": len(panels)+1, "type": kind, "title": title, "datasource": DS,
      "gridPos": {"x":x,"y":y,"w":w,"h":h},
      "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
      "targets": [{"refId": chr(65+i), "expr": e, "legendFormat": l, "datasource": DS} for i,(e,l) in enumerate(exprs)],
    })
def row(title, y):
    panels.append({"id": len(panels)+1, "type":"row", "title": title, "collapsed": False,
                   "gridPos": {"x":0,"y":y,"w":24,"h":1}, "panels": []})
def sel(extra=""):
    inner='job=~"$job",instance=~"$instance"' + ("," + extra if extra else "")
    return "{" + inner + "}"
S5 = sel('status=~"5.."'); S4 = sel('status=~"4.."'); S = sel()
row("HTTP", 0)
panel("Request rate by route", [("sum by (route) (rate(fraiseql_http_requests_total%s[$__rate_interval]))" % S, "{{route}}")], "reqps", 0, 1)
panel("Error rate", [("sum(rate(fraiseql_http_requests_total%s[$__rate_interval])) / clamp_min(sum(rate(fraiseql_http_requests_total%s[$__rate_interval])), 1e-9)" % (S5, S), "5xx"),
                     ("sum(rate(fraiseql_http_requests_total%s[$__rate_interval])) / clamp_min(sum(rate(fraiseql_http_requests_total%s[$__rate_interval])), 1e-9)" % (S4, S), "4xx")], "percentunit", 12, 1)
panel("Request latency p50 / p95 / p99", [
    ("histogram_quantile(%s, sum by (le) (rate(fraiseql_http_request_duration_seconds_bucket%s[$__rate_interval])))" % (q, S), "p%d" % round(q*100)) for q in (0.5,0.95,0.99)], "s", 0, 9)
panel("Latency p99 by route", [("histogram_quantile(0.99, sum by (le, route) (rate(fraiseql_http_request_duration_seconds_bucket%s[$__rate_interval])))" % S, "{{route}}")], "s", 12, 9)
row("GraphQL", 17)
panel("Operations by type and outcome", [("sum by (type, outcome) (rate(fraiseql_graphql_operations_total%s[$__rate_interval]))" % S, "{{type}} {{outcome}}")], "ops", 0, 18)
panel("Errors by code", [("sum by (code) (rate(fraiseql_graphql_errors_total%s[$__rate_interval]))" % S, "{{code}}")], "ops", 12, 18)
panel("GraphQL request latency p50 / p95 / p99", [
    ("histogram_quantile(%s, sum by (le) (rate(fraiseql_graphql_request_duration_seconds_bucket%s[$__rate_interval])))" % (q, S), "p%d" % round(q*100)) for q in (0.5,0.95,0.99)], "s", 0, 26)
panel("SQL statement latency p50 / p99", [
    ("histogram_quantile(%s, sum by (le) (rate(fraiseql_graphql_sql_duration_seconds_bucket%s[$__rate_interval])))" % (q, S), "p%d" % round(q*100)) for q in (0.5,0.99)], "s", 12, 26)
panel("Top operations by name", [("topk(10, sum by (name) (rate(fraiseql_graphql_operations_total%s[$__rate_interval])))" % S, "{{name}}")], "ops", 0, 34, w=24)
row("Observers", 42)
panel("Events processed / failed", [("sum(rate(fraiseql_observer_events_processed_total%s[$__rate_interval]))" % S, "processed"),
                                   ("sum(rate(fraiseql_observer_events_failed_total%s[$__rate_interval]))" % S, "failed")], "ops", 0, 43)
panel("Commit to dispatch lag p50 / p99", [
    ("histogram_quantile(%s, sum by (le) (rate(fraiseql_observer_read_lag_seconds_bucket%s[$__rate_interval])))" % (q, S), "p%d" % round(q*100)) for q in (0.5, 0.99)], "s", 12, 43)
panel("Events published to NATS JetStream", [("sum by (outcome) (rate(fraiseql_observer_events_published_total%s[$__rate_interval]))" % S, "{{outcome}}")], "ops", 0, 51, w=24)
row("Jobs", 59)
panel("Jobs queued / executed by action", [("sum by (action) (rate(fraiseql_job_queued_total%s[$__rate_interval]))" % S, "queued {{action}}"),
                                          ("sum by (action) (rate(fraiseql_job_executed_total%s[$__rate_interval]))" % S, "executed {{action}}")], "ops", 0, 60)
panel("Failed attempts by action and kind", [("sum by (action, kind) (rate(fraiseql_job_failed_total%s[$__rate_interval]))" % S, "{{action}} {{kind}}")], "ops", 12, 60)
panel("Job duration p50 / p99 by action", [
    ("histogram_quantile(%s, sum by (le, action) (rate(fraiseql_job_duration_seconds_bucket%s[$__rate_interval])))" % (q, S), "{{action}} p%d" % round(q*100)) for q in (0.5, 0.99)], "s", 0, 68)
panel("Retried / dead-lettered by action", [("sum by (action) (rate(fraiseql_job_retried_total%s[$__rate_interval]))" % S, "retried {{action}}"),
                                            ("sum by (action) (rate(fraiseql_job_dead_lettered_total%s[$__rate_interval]))" % S, "dead-lettered {{action}}")], "ops", 12, 68)
panel("Queue depth (ready, waiting for a retry, running)", [("max(fraiseql_job_queue_depth%s)" % S, "depth")], "short", 0, 76)
panel("Dead letters awaiting an operator", [("max(fraiseql_job_dead_letters%s)" % S, "dead letters")], "short", 12, 76)
panel("Reclaimed, released, backend retries", [("sum(rate(fraiseql_job_reclaimed_total%s[$__rate_interval]))" % S, "reclaimed (worker died)"),
                                               ("sum(rate(fraiseql_job_released_total%s[$__rate_interval]))" % S, "released at shutdown"),
                                               ("sum by (op) (rate(fraiseql_job_backend_retries_total%s[$__rate_interval]))" % S, "backend retry {{op}}")], "ops", 0, 84)
panel("Dedup skips (replays not re-executed)", [("sum(rate(fraiseql_job_dedup_skips_total%s[$__rate_interval]))" % S, "skips")], "ops", 12, 84)
row("Arrow Flight", 92)
panel("Streams by ticket type", [("sum by (ticket) (rate(fraiseql_flight_streams_started_total%s[$__rate_interval]))" % S, "started {{ticket}}"),
                                 ("sum by (ticket) (rate(fraiseql_flight_streams_finished_total%s[$__rate_interval]))" % S, "finished {{ticket}}"),
                                 ("sum by (ticket) (rate(fraiseql_flight_streams_failed_total%s[$__rate_interval]))" % S, "failed {{ticket}}")], "ops", 0, 93)
panel("Rows and bytes sent", [("sum(rate(fraiseql_flight_rows_sent_total%s[$__rate_interval]))" % S, "rows/s"),
                              ("sum(rate(fraiseql_flight_bytes_sent_total%s[$__rate_interval]))" % S, "bytes/s")], "short", 12, 93)
panel("Stream duration p50 / p99", [
    ("histogram_quantile(%s, sum by (le) (rate(fraiseql_flight_stream_duration_seconds_bucket%s[$__rate_interval])))" % (q, S), "p%d" % round(q*100)) for q in (0.5, 0.99)], "s", 0, 101, w=24)
row("Database", 109)
panel("Connection pool", [("sum(fraiseql_db_pool_connections%s)" % S, "open"), ("sum(fraiseql_db_pool_connections_in_use%s)" % S, "in use"),
                          ("sum(fraiseql_db_pool_waiting%s)" % S, "waiting"), ("sum(fraiseql_db_pool_max_connections%s)" % S, "max")], "short", 0, 110)
panel("Database up", [("min(fraiseql_db_up%s)" % S, "up")], "short", 12, 110, kind="stat")
row("Process", 118)
panel("Resident memory", [("fraiseql_process_resident_memory_bytes%s" % S, "{{instance}}")], "bytes", 0, 119)
panel("CPU", [("rate(fraiseql_process_cpu_seconds_total%s[$__rate_interval])" % S, "{{instance}}")], "percentunit", 12, 119)
panel("Open file descriptors", [("fraiseql_process_open_fds%s" % S, "{{instance}}")], "short", 0, 127)
panel("Version", [("count by (version) (fraiseql_build_info%s)" % S, "{{version}}")], "short", 12, 127, kind="stat")
dash={
 "title":"FraiseQL","uid":"fraiseql","tags":["fraiseql"],"timezone":"browser","schemaVersion":39,"version":1,
 "refresh":"30s","time":{"from":"now-1h","to":"now"},
 "templating":{"list":[
   {"name":"datasource","type":"datasource","query":"prometheus","label":"Data source"},
   {"name":"job","type":"query","datasource":DS,"query":"label_values(fraiseql_build_info, job)","includeAll":True,"multi":True,"current":{"text":"All","value":"$__all"},"allValue":".*","refresh":2},
   {"name":"instance","type":"query","datasource":DS,"query":"label_values(fraiseql_build_info{job=~\"$job\"}, instance)","includeAll":True,"multi":True,"current":{"text":"All","value":"$__all"},"allValue":".*","refresh":2}]},
 "panels": panels,
}
json.dump(dash, open("assets/grafana/fraiseql.json","w"), indent=2)
