#!/usr/bin/env python3
"""scripts/bench serve: `distill serve` under a bounded load on loopback, at several client
concurrencies (default 1, 2, 4, 8, 16), in one run:

- throughput: wrk (Debian) holds C keep-alive connections, each sending /v1/completions requests
  back to back for --seconds. Reported: requests/s, generated tokens/s (the server's own
  distill_generated_tokens_total over the run, so it is what the engine produced, not an
  assumption), p50 / p99 request latency (wrk --latency), non-2xx answers, and the average number
  of sequences sampled per decode step (generated tokens / engine steps: batching at work).
- time to first token: a small threaded Python client (this file; raw sockets, one thread and
  one keep-alive connection per client) sends the same request with "stream": true back to back
  for --ttft-seconds at each concurrency and times each from sending the request to the first
  server-sent event that carries text. p50 / p99 over all rounds' requests. The clients start one
  by one over --ramp seconds before the timed window opens, so the window sees C clients at work,
  not the moment they all began at once.
- burst: per round, the most clients each send one streaming request at the same moment (a
  thundering herd); its median and last time to first token are reported on their own (the last
  waits for every prompt of the burst to be processed: it grows with the burst, by design).

Targets (continuous batching, docs/serve.md): throughput at 16 clients >= 6x that of 1 client,
and p99 TTFT at 16 clients <= 3x its value at 1 client (a request joins the running batch at the
next decode step instead of waiting for the others to finish).

The host's CPU model and flags (bench/hostinfo.py, as the other benches print them) and
/proc/loadavg before and after are printed, and the last line is a JSON summary.

The model is a small byte-level gpt2 (--preset, default gpt2-mini: 6 layers, width 256, 4.8M
parameters) briefly pretrained on the KJV text, so the bench needs nothing downloaded. The server,
wrk and the Python client share this machine's cores: on a busy machine the figures are
indicative.
"""
import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

from hostinfo import cpu_info, cpu_line

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def metric(port, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    m = re.search(r"^" + re.escape(name) + r" ([0-9.eE+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def parse_wrk(out):
    def to_ms(v, unit):
        return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    lat = {}
    for p in ("50", "99"):
        m = re.search(r"^\s+" + p + r"%\s+([0-9.]+)(us|ms|s|m)\s*$", out, re.M)
        lat[p] = to_ms(*m.groups()) if m else float("nan")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return rps, lat["50"], lat["99"], int(non2xx.group(1)) if non2xx else 0, errors.group(0) if errors else ""


def wait_idle(port, timeout=60):
    """Waits until the engine has nothing running or queued: wrk abandons the requests in flight
    when its time is up, and the server finishes them (a non-streaming request cannot tell that
    its client left); measuring the next phase on top of them would count their slots."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if metric(port, "distill_running_sequences") == 0 and metric(port, "distill_queue_depth") == 0:
            return
        time.sleep(0.05)


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def percentile(xs, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, int(round(p / 100.0 * len(xs) + 0.5)) - 1))
    return xs[k]


FIRST_TEXT = re.compile(rb'"text":"(?!")')  # an event whose text is not empty


def ttft_run(port, body, clients, seconds, ramp=0.0, once=False):
    """C threads, each sending streaming requests back to back on its own keep-alive connection
    for `seconds`; returns (time-to-first-token list in ms, requests completed, failures).

    ramp: client i starts i * ramp / C seconds in, and only requests sent once all of them run
    (after `ramp`) are timed, for `seconds` from then: the load is C clients, not C clients that
    started at the same instant (that thundering herd is measured by itself with once=True: every
    client sends one request at the same moment).

    Raw sockets and a byte search instead of http.client's line-by-line reading: on a 2-core
    machine the client's own CPU time is taken from the server's, and a thread busy parsing other
    streams' events delays the clock reading of one whose first token just arrived."""
    # A thread that got its first byte must not wait out another thread's 5 ms GIL slice before
    # it reads the clock.
    sys.setswitchinterval(0.0002)
    samples, lock = [], threading.Lock()
    counts = {"done": 0, "failed": 0}
    start = time.time()
    timed_from = start + ramp
    deadline = timed_from + seconds
    payload = body.encode()
    request = (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
               ).encode() + payload

    def client(i):
        sock = None
        mine, done, failed = [], 0, 0
        delay = start + i * ramp / clients - time.time()
        if delay > 0:
            time.sleep(delay)
        while time.time() < deadline:
            timed = time.time() >= timed_from
            try:
                if sock is None:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                t0 = time.perf_counter()
                sock.sendall(request)
                buf, first = b"", None
                while True:
                    data = sock.recv(65536)
                    if not data:
                        raise OSError("the server closed the connection")
                    buf += data
                    if first is None and FIRST_TEXT.search(buf):
                        first = time.perf_counter() - t0
                    if not buf.startswith(b"HTTP/1.1 200"):
                        raise OSError(buf[:60].decode(errors="replace"))
                    # The last event, then the chunked body's terminator.
                    if b"data: [DONE]" in buf and buf.endswith(b"0\r\n\r\n"):
                        break
                if first is not None and timed:
                    mine.append(first * 1e3)
                done += 1
                if once:
                    break
            except OSError:
                failed += 1
                if sock is not None:
                    sock.close()
                sock = None
        if sock is not None:
            sock.close()
        with lock:
            samples.extend(mine)
            counts["done"] += done
            counts["failed"] += failed

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return samples, counts["done"], counts["failed"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--distill", default=os.path.join(ROOT, "build", "distill"))
    ap.add_argument("--model", help="model directory to serve (default: pretrain --preset briefly)")
    ap.add_argument("--preset", default="gpt2-mini",
                    help="built-in shape pretrained for the bench when no --model is given")
    ap.add_argument("--concurrency", default="1,2,4,8,16")
    ap.add_argument("--seconds", type=int, default=4, help="load duration per concurrency and round")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds over all concurrencies (medians reported: the machine may be shared)")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1,
                    help="OMP threads of the server (default 1: wrk needs the other core of a "
                         "2-core machine; two OMP threads that spin-wait against a busy load "
                         "generator lose far more than they gain)")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--ttft-seconds", type=int, default=4,
                    help="streaming (time to first token) load per concurrency and round")
    ap.add_argument("--ramp", type=float, default=1.0,
                    help="streaming clients start one by one over this many seconds before the "
                         "TTFT window opens (0: all at once, the window opening with them)")
    ap.add_argument("--kv-cache", default="f32", help="the server's --kv-cache (f32, bf16, f16)")
    ap.add_argument("--prefill-chunk", type=int, default=64, help="the server's --prefill-chunk")
    a = ap.parse_args()

    load_before = loadavg()
    cpu = cpu_info()
    work = os.path.join(ROOT, "build", "bench-serve")
    os.makedirs(work, exist_ok=True)
    model = a.model
    if not model:
        model = os.path.join(work, "pretrain-" + a.preset, "model")
        if not os.path.exists(os.path.join(model, "config.json")):
            corpus = os.path.join(ROOT, "build", "data", "kjv.txt")
            print(f"pretraining a small byte-level {a.preset} for the bench ...", file=sys.stderr)
            subprocess.run([a.distill, "pretrain", corpus, "--preset", a.preset, "--steps", "40",
                            "--batch-size", "8", "--seq-len", "128", "--eval-every", "1000",
                            "--save-every", "1000", "--out", os.path.join(work, "pretrain-" + a.preset)],
                           check=True, stdout=subprocess.DEVNULL)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    server = subprocess.Popen([a.distill, "serve", "--model", model, "--model-name", "bench",
                               "--port", "0", "--max-batch", str(a.max_batch), "--max-queue", "1024",
                               "--kv-cache", a.kv_cache, "--prefill-chunk", str(a.prefill_chunk)],
                              stdout=subprocess.PIPE, stderr=open(os.path.join(work, "serve.log"), "w"),
                              env=env, text=True)
    try:
        line = server.stdout.readline()
        port = int(re.search(r":(\d+) ", line).group(1))
        request = {"model": "bench", "prompt": "And God said, Let there be light",
                   "max_tokens": a.max_tokens, "temperature": 0.8}
        body = json.dumps(request)
        stream_body = json.dumps(dict(request, stream=True))
        wenv = dict(os.environ, SERVE_BENCH_BODY=body)
        url = f"http://127.0.0.1:{port}/v1/completions"
        # Warm-up.
        subprocess.run(["wrk", "-t1", "-c1", "-d2s", "-s", os.path.join(ROOT, "bench", "serve_wrk.lua"), url],
                       env=wenv, check=True, capture_output=True)
        ttft_run(port, stream_body, 1, 1)
        levels = [int(x) for x in a.concurrency.split(",")]
        print(f"distill serve, {a.preset if not a.model else a.model} byte-level, max_tokens {a.max_tokens}, "
              f"{a.threads} OMP threads, max batch {a.max_batch}, KV cache {a.kv_cache}, prefill chunk "
              f"{a.prefill_chunk}; per level and round {a.seconds}s of wrk (throughput) then "
              f"{a.ttft_seconds}s of streaming clients (TTFT; they start one by one over {a.ramp}s "
              f"first), and per round a burst of {max(levels)} requests at once; {a.rounds} rounds "
              f"(medians; clients on the same machine)")
        print(cpu_line(cpu))
        print(f"load before: {load_before}")
        runs = {c: [] for c in levels}
        ttft = {c: [] for c in levels}
        stream_fail = {c: 0 for c in levels}
        burst = []
        for r in range(a.rounds):
            for c in levels:
                wait_idle(port)
                tok0 = metric(port, "distill_generated_tokens_total")
                pass0 = metric(port, "distill_engine_passes_total")
                t0 = time.time()
                out = subprocess.run(["wrk", f"-t{min(c, 2)}", f"-c{c}", f"-d{a.seconds}s", "--latency",
                                      "--timeout", "30s", "-s", os.path.join(ROOT, "bench", "serve_wrk.lua"), url],
                                     env=wenv, check=True, capture_output=True, text=True).stdout
                dt = time.time() - t0
                rps, p50, p99, non2xx, sock = parse_wrk(out)
                tokens = metric(port, "distill_generated_tokens_total") - tok0
                steps = metric(port, "distill_engine_passes_total") - pass0
                per_step = tokens / steps if steps else 0.0
                runs[c].append((rps, tokens / dt, p50, p99, per_step, non2xx))
                wait_idle(port)
                samples, done, failed = ttft_run(port, stream_body, c, a.ttft_seconds, ramp=a.ramp)
                ttft[c].extend(samples)
                stream_fail[c] += failed
                t50 = statistics.median(samples) if samples else float("nan")
                print(f"  round {r + 1} clients {c:>2}: {rps:7.1f} req/s {tokens / dt:7.0f} tok/s  p50 {p50:7.1f} ms"
                      f"  p99 {p99:7.1f} ms  {per_step:5.2f} seq/step  non-2xx {non2xx}"
                      f"  | stream {done} req, TTFT p50 {t50:6.1f} ms" + (f", {failed} failed" if failed else "")
                      + (f"  {sock}" if sock else ""), file=sys.stderr)
            # The thundering herd: the most clients, each sending one request at the same moment.
            wait_idle(port)
            samples, _, _ = ttft_run(port, stream_body, max(levels), 60, once=True)
            if samples:
                burst.append(samples)
                print(f"  round {r + 1} burst of {max(levels)}: TTFT median {statistics.median(samples):6.1f} "
                      f"ms, last {max(samples):6.1f} ms", file=sys.stderr)
        load_after = loadavg()
        med = lambda xs: statistics.median(xs)
        print(f"{'clients':>7} {'req/s':>9} {'gen tok/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'seq/step':>9} "
              f"{'non-2xx':>8} {'TTFT p50':>9} {'TTFT p99':>9} {'streams':>8}")
        summary_levels = []
        for c in levels:
            col = list(zip(*runs[c]))
            t50 = percentile(ttft[c], 50) if ttft[c] else float("nan")
            t99 = percentile(ttft[c], 99) if ttft[c] else float("nan")
            print(f"{c:>7} {med(col[0]):>9.1f} {med(col[1]):>10.0f} {med(col[2]):>9.1f} {med(col[3]):>9.1f} "
                  f"{med(col[4]):>9.2f} {sum(col[5]):>8} {t50:>9.1f} {t99:>9.1f} {len(ttft[c]):>8}")
            summary_levels.append({"clients": c, "req_s": round(med(col[0]), 2), "tok_s": round(med(col[1]), 1),
                                   "p50_ms": round(med(col[2]), 2), "p99_ms": round(med(col[3]), 2),
                                   "seq_per_step": round(med(col[4]), 2), "non_2xx": sum(col[5]),
                                   "ttft_p50_ms": round(t50, 2), "ttft_p99_ms": round(t99, 2),
                                   "streams": len(ttft[c]), "stream_failures": stream_fail[c]})
        lo, hi = min(levels), max(levels)
        ratios = [h[0] / l[0] for l, h in zip(runs[lo], runs[hi]) if l[0] > 0]
        thr = med([r[0] for r in runs[hi]]) / max(1e-9, med([r[0] for r in runs[lo]]))
        ttft_ratio = (percentile(ttft[hi], 99) / percentile(ttft[lo], 99)
                      if ttft[hi] and ttft[lo] else float("nan"))
        print(f"throughput {hi} clients / {lo} client: median {thr:.2f}x (target >= 6x)"
              + (f" (per-round ratios: {', '.join(f'{x:.2f}' for x in ratios)})" if ratios else ""))
        print(f"p99 time to first token {hi} clients / {lo} client: {ttft_ratio:.2f}x (target <= 3x)")
        nan = float("nan")
        burst_med = statistics.median([statistics.median(b) for b in burst]) if burst else nan
        burst_last = statistics.median([max(b) for b in burst]) if burst else nan
        print(f"burst: {hi} requests sent at the same moment: TTFT median {burst_med:.1f} ms, last "
              f"{burst_last:.1f} ms (medians over rounds; the last waits for all {hi} prompts)")
        print(f"load after: {load_after}")
        print(json.dumps({"bench": "serve", "preset": a.preset if not a.model else a.model,
                          "max_tokens": a.max_tokens, "threads": a.threads, "max_batch": a.max_batch,
                          "kv_cache": a.kv_cache, "prefill_chunk": a.prefill_chunk, "rounds": a.rounds,
                          "cpu": cpu, "load_before": load_before, "load_after": load_after,
                          "levels": summary_levels,
                          "ramp_s": a.ramp, "burst_ttft_median_ms": round(burst_med, 2),
                          "burst_ttft_last_ms": round(burst_last, 2),
                          "throughput_ratio": round(thr, 3), "ttft_p99_ratio": round(ttft_ratio, 3),
                          "throughput_target_met": thr >= 6.0, "ttft_target_met": ttft_ratio <= 3.0}))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
