# oraculo-trio tasks. `just --list` shows them all.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Run the service against the exchange configured in oraculo.toml.
run *ARGS:
    oraculo-trio run --config oraculo.toml {{ARGS}}

# Run the service against the bundled mock exchange with a scripted market (no internet needed).
demo *ARGS:
    oraculo-trio demo {{ARGS}}

# The whole test suite: real PostgreSQL and real WebSockets on loopback.
test *ARGS:
    python -m pytest {{ARGS}}

# Rewrite grafana/oraculo-alerts.json from grafana/build_dashboard.py.
dashboard *ARGS:
    python grafana/build_dashboard.py {{ARGS}}

# Lint and format check.
lint:
    ruff check oraculo_trio tests benchmarks grafana
    ruff format --check oraculo_trio tests benchmarks grafana

# Open-loop load test with a KPI verdict, e.g. `just loadtest depth 1500`.
loadtest STREAM="depth" RATE="1500" *ARGS:
    oraculo-trio loadtest {{STREAM}} {{RATE}} {{ARGS}}

# The acceptance soak: 900 s at 120 % of 1,500 msg/s.
loadtest-soak *ARGS:
    oraculo-trio loadtest depth 1800 --duration 900 {{ARGS}}

# Diff books under faults: gaps and duplicates resync single symbols (metrics.json `book`).
loadtest-depthdiff RATE="1500" FAULTS="gaps,dups" *ARGS:
    oraculo-trio loadtest depthdiff {{RATE}} --faults {{FAULTS}} {{ARGS}}

# What the book sync costs per diff (µs), against the bare engine.
bench-diffbook:
    python benchmarks/bench_diffbook.py

# A webhook that never answers must not slow evaluation: 1,500 depth msg/s, queue-time p99.
loadtest-webhook-hang *ARGS:
    oraculo-trio loadtest depth 1500 --webhook hang {{ARGS}}

# The demo's rules (every kind) fire and resolve within 30 s of start.
demo-rules:
    oraculo-trio demo --duration 32 --http-port 0 --database-url sqlite:///var/oraculo-demo-rules.db

# Saturation search: steps the rate up until queue-time p99 > 100 ms; the age of what is
# evaluated per stream at every step. `just bench --overload` then holds 2x the saturation
# for 60 s (`--stream depthdiff` for diff books; `--saturation RATE` skips the search).
bench *ARGS:
    oraculo-trio loadtest bench {{ARGS}}

# Render a real load test's report.html in headless Chromium (verdict banner in the first
# 800 px, nothing wider than the page); `just test` runs it too.
render-report *ARGS:
    python -m pytest tests/loadtest/test_report_render.py -p no:cacheprovider {{ARGS}}

# Throughput and CPU per message with 1 and 2 worker processes (run --workers N).
bench-workers *ARGS:
    python benchmarks/bench_workers.py {{ARGS}}

# Diff books, the service short of CPU (--service-cpu F as root, or --hogs N): policy at work.
bench-starved *ARGS:
    python benchmarks/bench_starved_service.py {{ARGS}}

# The generator alone at RATE against a discarding client: is the rate kept within 1 %?
loadtest-calibrate RATE="20000" *ARGS:
    oraculo-trio loadtest calibrate {{RATE}} {{ARGS}}

# `just reliability` runs every scenario of tests/reliability in full, under load (~20 min);
# `just reliability quick` their short versions (~2 min; `just test` runs these too). Both
# write artifacts/reliability/<UTC timestamp>/report.json and print the table. PostgreSQL
# faults use a private cluster (initdb, a free port), never the shared server.
# Faults and bad input, with figures (lost must be 0): MODE is full or quick.
reliability MODE="full" *ARGS:
    python -m pytest tests/reliability --reliability={{MODE}} {{ARGS}}
