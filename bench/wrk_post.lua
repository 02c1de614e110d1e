-- wrk script for `python -m bench ingress`: POST the body given in BENCH_BODY_SIZE bytes.
wrk.method = "POST"
wrk.body = string.rep("x", tonumber(os.getenv("BENCH_BODY_SIZE") or "32"))
