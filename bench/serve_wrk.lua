-- wrk script for scripts/bench serve: POSTs one completions request (the body comes from the
-- SERVE_BENCH_BODY environment variable, set by bench/serve_bench.py).
wrk.method = "POST"
wrk.body = os.getenv("SERVE_BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
