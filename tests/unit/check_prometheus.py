"""Runs `unit_test_metrics --prometheus` (a known run on local://: 10 events
handled, one failing once, one failing twice and dead-lettered) and reads its
output with the Prometheus client library's own parser: every family must
parse, carry its type, and hold the values of that run. The same output
must pass `promtool check metrics`, the Prometheus project's own check of
the format and its naming rules (scripts/deps.sh installs promtool).

    check_prometheus.py PATH-TO-unit_test_metrics
"""
import subprocess
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    run = subprocess.run([sys.argv[1], "--prometheus"], capture_output=True, text=True,
                         timeout=90)
    if run.returncode != 0:
        sys.exit(f"unit_test_metrics --prometheus failed ({run.returncode}): {run.stderr}")
    lint = subprocess.run(["promtool", "check", "metrics"], input=run.stdout,
                          capture_output=True, text=True, timeout=60)
    if lint.returncode != 0:
        sys.exit(f"promtool check metrics failed ({lint.returncode}):\n"
                 f"{lint.stdout}{lint.stderr}\non:\n{run.stdout}")
    queue = run.stderr.strip().split("queue ", 1)[1].splitlines()[0]
    families = {f.name: f for f in text_string_to_metric_families(run.stdout)}

    def sample(family, suffix="", **labels):
        f = families.get(family)
        if f is None:
            sys.exit(f"no family {family} in:\n{run.stdout}")
        for s in f.samples:
            if s.name == family + suffix and s.labels == labels:
                return s.value
        sys.exit(f"no sample {family}{suffix}{labels} among {f.samples}")

    want_types = {
        "eventwire_manager_ready": "gauge",
        "eventwire_client_connects": "counter",
        "eventwire_client_reconnects": "counter",
        "eventwire_client_disconnects": "counter",
        "messaging_client_sent_messages": "counter",
        "eventwire_client_confirms_pending": "gauge",
        "messaging_client_operation_duration_seconds": "histogram",
        "messaging_client_consumed_messages": "counter",
        "eventwire_listener_handled": "counter",
        "eventwire_listener_failed": "counter",
        "eventwire_listener_retried": "counter",
        "eventwire_listener_dead_lettered": "counter",
        "eventwire_listener_redelivered": "counter",
        "eventwire_listener_in_flight": "gauge",
        "eventwire_listener_consuming": "gauge",
        "messaging_process_duration_seconds": "histogram",
    }
    for name, kind in want_types.items():
        if name not in families:
            sys.exit(f"family {name} missing; have {sorted(families)}")
        if families[name].type != kind:
            sys.exit(f"{name} is a {families[name].type}, expected a {kind}")
    if set(families) != set(want_types):
        sys.exit(f"unexpected families: {sorted(set(families) - set(want_types))}")

    dest = {"messaging_destination_name": queue}
    checks = [
        (sample("messaging_client_consumed_messages", "_total", **dest), 12),
        (sample("eventwire_listener_handled", "_total", **dest), 11),
        (sample("eventwire_listener_failed", "_total", **dest), 3),
        (sample("eventwire_listener_retried", "_total", **dest), 2),
        (sample("eventwire_listener_dead_lettered", "_total", **dest), 1),
        (sample("eventwire_listener_redelivered", "_total", **dest), 0),
        (sample("eventwire_listener_in_flight", **dest), 0),
        (sample("eventwire_listener_consuming", **dest), 1),
        (sample("messaging_process_duration_seconds", "_count", **dest), 14),
        (sample("messaging_process_duration_seconds", "_bucket", le="+Inf", **dest), 14),
        (sample("messaging_client_sent_messages", "_total"), 12),
        (sample("messaging_client_sent_messages", "_total", error_type="EW_EINDOUBT"), 0),
        (sample("messaging_client_operation_duration_seconds", "_count",
                messaging_operation_name="send"), 12),
        (sample("eventwire_client_confirms_pending"), 0),
        (sample("eventwire_manager_ready"), 1),
    ]
    for i, (got, want) in enumerate(checks):
        if got != want:
            sys.exit(f"check {i}: got {got}, expected {want}\n{run.stdout}")
    # Buckets are cumulative and end at the count.
    buckets = [s for s in families["messaging_process_duration_seconds"].samples
               if s.name.endswith("_bucket")]
    values = [s.value for s in buckets]
    if values != sorted(values) or len(buckets) != 20:
        sys.exit(f"buckets not cumulative or not 20: {buckets}")
    print(f"promtool check metrics: ok; parsed {len(families)} families, "
          f"{sum(len(f.samples) for f in families.values())} samples: ok")


if __name__ == "__main__":
    main()
