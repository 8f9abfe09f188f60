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

# Lint and format check.
lint:
    ruff check oraculo_trio loadtest tests benchmarks
    ruff format --check oraculo_trio loadtest tests benchmarks

# Open-loop load test with a KPI verdict, e.g. `just loadtest depth 1500`.
loadtest STREAM="depth" RATE="1500" *ARGS:
    oraculo-trio loadtest {{STREAM}} {{RATE}} {{ARGS}}

# The plan's acceptance soak: 900 s at 120 % of 1,500 msg/s.
loadtest-soak *ARGS:
    oraculo-trio loadtest depth 1800 --duration 900 {{ARGS}}

# Saturation search: steps the rate up until queue-time p99 > 100 ms.
bench *ARGS:
    oraculo-trio loadtest bench {{ARGS}}
