#!/usr/bin/env python3
"""The side-by-side load benchmark: portcullis against nginx, in one run.

  python3 bench/run.py                 # 5 runs of 10 s per measurement (about 20 minutes)
  python3 bench/run.py --runs 1 --duration 3    # a quick look

Scenarios, all in front of bench/upstream (a minimal hyper server on
127.0.0.1:18080):
  direct       the upstream answered directly
  nginx        nginx proxy_pass with a keep-alive upstream pool
  nginx-auth   nginx with auth_request to a 204 endpoint (a forward-auth hop)
  passthrough  portcullis with bench/passthrough.toml (no checks)
  full         portcullis with bench/full.toml: HS256 JWT from a pool of
               distinct tokens, Cedar on 500 policies, a 10,000-entry deny
               list, a rate limit that never fires, the decision log on

Each is measured with wrk in two layouts (shared: everything on both cores;
split: wrk pinned to CPU 0, the servers to CPU 1) and with 1 and 50
connections. Measurements alternate: every run goes through every scenario
before the next run starts, so drift on a shared machine spreads over all
of them. Medians of the runs are reported.

Writes bench/results/results.md (the table, with the issue's targets),
results.json (every run), and chart.png (gnuplot). Every process started is
stopped by its PID, also on Ctrl-C. Needs wrk, nginx and gnuplot (installed
with apt-get when missing and running as root).
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
UPSTREAM_PORT = 18080
PORTS = {"direct": UPSTREAM_PORT, "nginx": 8090, "nginx-auth": 8091, "passthrough": 8082, "full": 8081}
SCENARIOS = ["direct", "nginx", "nginx-auth", "passthrough", "full"]
PATH = "/bench/items/1"
TOKENS = 200

NGINX_CONF = """
worker_processes 2;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  upstream up {{ server 127.0.0.1:{up}; keepalive 128; }}
  upstream auth {{ server 127.0.0.1:8092; keepalive 128; }}
  # Plain reverse proxy.
  server {{
    listen 127.0.0.1:8090;
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
  # Forward auth: every request asks the 204 endpoint first.
  server {{
    listen 127.0.0.1:8091;
    location / {{
      auth_request /auth;
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
    location = /auth {{
      internal;
      proxy_pass http://auth;
      proxy_http_version 1.1;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header Connection "";
    }}
  }}
  # The trivial decision endpoint.
  server {{
    listen 127.0.0.1:8092;
    location / {{ return 204; }}
  }}
}}
"""

WRK_SCRIPT = """
local tokens = {{}}
for line in io.lines("{tokens}") do tokens[#tokens + 1] = line end
local i = 0
request = function()
  i = i + 1
  local t = tokens[(i % #tokens) + 1]
  return wrk.format("GET", "{path}", {{ ["Authorization"] = "Bearer " .. t }})
end
"""


class Procs:
    """Every process started, stopped by PID at the end."""

    def __init__(self):
        self.procs = []

    def start(self, name, argv, **kw):
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
        self.procs.append((name, p))
        return p

    def stop_all(self):
        for name, p in reversed(self.procs):
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
        for name, p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()


def need(tool, package):
    if shutil.which(tool):
        return
    if os.geteuid() != 0:
        sys.exit(f"error: {tool} is missing; install it with: apt-get install {package}")
    print(f"installing {package}", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-q", package], check=True, stdout=subprocess.DEVNULL)


def wait_port(port, proc, name):
    import socket

    deadline = time.time() + 15
    while time.time() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            sys.exit(f"error: {name} exited: {err.strip()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"error: {name} did not listen on {port}")


def threads_of(pid):
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return []


def pin(pids, cpus):
    """Pin every thread of every process in `pids` to `cpus`."""
    for pid in pids:
        for tid in threads_of(pid):
            subprocess.run(["taskset", "-p", "-c", cpus, str(tid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def rss_kib(pid, field="VmRSS:"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pids):
    """User and system CPU ticks of `pids` (each process's threads included)."""
    user = system = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user += int(fields[11])
            system += int(fields[12])
        except (FileNotFoundError, IndexError, ValueError):
            pass
    return user, system


def to_us(v):
    m = re.match(r"([\d.]+)(us|ms|s)$", v)
    if not m:
        return None
    x = float(m.group(1))
    return x * {"us": 1, "ms": 1000, "s": 1_000_000}[m.group(2)]


def parse_wrk(out):
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50_us": to_us(p50.group(1)) if p50 else None,
        "p99_us": to_us(p99.group(1)) if p99 else None,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(0) if errors else None,
    }


def run_wrk(scenario, conns, duration, layout, script):
    threads = 1 if conns == 1 else 2
    # Every scenario gets the same requests, tokens included: the script
    # costs wrk some CPU, and on shared cores that must fall on all alike.
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency", "--timeout", "5s", "-s", script]
    argv.append(f"http://127.0.0.1:{PORTS[scenario]}{PATH}")
    if layout == "split":
        argv = ["taskset", "-c", "0"] + argv
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30).stdout
    return parse_wrk(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    ap.add_argument("--layouts", default="shared,split")
    ap.add_argument("--conns", default="1,50")
    ap.add_argument("--out", default=os.path.join(BENCH, "results"))
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--replot", action="store_true", help="only rewrite the table and chart from OUT/results.json")
    args = ap.parse_args()
    layouts = args.layouts.split(",")
    conns_list = [int(c) for c in args.conns.split(",")]
    if args.replot:
        with open(os.path.join(args.out, "results.json")) as f:
            saved = json.load(f)
        args.runs, args.duration = saved["runs"], saved["duration_s"]
        report(saved["results"], args, layouts, conns_list)
        return

    for tool, pkg in [("wrk", "wrk"), ("nginx", "nginx-light"), ("gnuplot", "gnuplot-nox"), ("taskset", "util-linux")]:
        need(tool, pkg)
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "portcullis", "-p", "bench-upstream"], cwd=ROOT, check=True)
    release = os.path.join(ROOT, "target", "release")
    portcullis = os.path.join(release, "portcullis")

    work = tempfile.mkdtemp(prefix="portcullis-bench-")
    procs = Procs()
    signal.signal(signal.SIGINT, lambda *_: (procs.stop_all(), sys.exit(130)))
    try:
        up = procs.start("upstream", [os.path.join(release, "bench-upstream"), f"127.0.0.1:{UPSTREAM_PORT}"])
        wait_port(UPSTREAM_PORT, up, "bench-upstream")
        with open(os.path.join(work, "nginx.conf"), "w") as f:
            f.write(NGINX_CONF.format(dir=work, up=UPSTREAM_PORT))
        ngx = procs.start("nginx", ["nginx", "-p", work, "-c", os.path.join(work, "nginx.conf"), "-g", "daemon off;"])
        wait_port(8090, ngx, "nginx")
        pt = procs.start("passthrough", [portcullis, "serve", "--config", os.path.join(BENCH, "passthrough.toml"), "--listen", "127.0.0.1:8082"])
        wait_port(8082, pt, "portcullis (passthrough)")
        # full.toml's decision log: started afresh, so a run's lines are its own.
        try:
            os.remove("/tmp/portcullis-bench-decisions.log")
        except FileNotFoundError:
            pass
        full = procs.start("full", [portcullis, "serve", "--config", os.path.join(BENCH, "full.toml"), "--listen", "127.0.0.1:8081"])
        wait_port(8081, full, "portcullis (full)")

        tokens = os.path.join(work, "tokens.txt")
        with open(tokens, "w") as f:
            for i in range(TOKENS):
                t = subprocess.run([portcullis, "token", "--config", os.path.join(BENCH, "full.toml"), "--sub", f"bench-{i}", "--ttl", "24h"],
                                   capture_output=True, text=True, check=True).stdout.strip()
                f.write(t + "\n")
        script = os.path.join(work, "tokens.lua")
        with open(script, "w") as f:
            f.write(WRK_SCRIPT.format(tokens=tokens, path=PATH))

        # Every scenario must answer 200 before anything is measured.
        for s in SCENARIOS:
            r = run_wrk(s, 1, 1, "shared", script)
            if r["rps"] == 0 or r["non2xx"]:
                sys.exit(f"error: {s} does not answer 200 on {PATH}: {r}")

        # nginx forks its workers: pin them too.
        nginx_pids = [ngx.pid] + [int(p) for p in subprocess.run(["pgrep", "-P", str(ngx.pid)], capture_output=True, text=True).stdout.split()]
        servers = [up.pid, pt.pid, full.pid] + nginx_pids
        # Whose CPU each scenario measures besides the upstream's.
        fronts = {"direct": [], "nginx": nginx_pids, "nginx-auth": nginx_pids, "passthrough": [pt.pid], "full": [full.pid]}

        results = []
        total = args.runs * len(layouts) * len(conns_list) * len(SCENARIOS)
        done = 0
        for run in range(args.runs):
            for layout in layouts:
                pin(servers, "1" if layout == "split" else "0,1")
                for conns in conns_list:
                    # Rotate the order run by run.
                    order = SCENARIOS[run % len(SCENARIOS):] + SCENARIOS[: run % len(SCENARIOS)]
                    for s in order:
                        peak = [0]
                        stop = threading.Event()

                        def sample(pid=full.pid if s == "full" else pt.pid):
                            while not stop.is_set():
                                peak[0] = max(peak[0], rss_kib(pid))
                                time.sleep(0.25)

                        sampler = None
                        if s in ("full", "passthrough"):
                            sampler = threading.Thread(target=sample)
                            sampler.start()
                        front = fronts[s]
                        before = cpu_ticks(front), cpu_ticks([up.pid])
                        r = run_wrk(s, conns, args.duration, layout, script)
                        after = cpu_ticks(front), cpu_ticks([up.pid])
                        stop.set()
                        if sampler:
                            sampler.join()
                        # CPU per request of the server in front and of the
                        # upstream behind it, from /proc (clock ticks).
                        n = r["rps"] * args.duration
                        per = (lambda a, b: (b - a) / CLK_TCK * 1e6 / n) if n else (lambda a, b: None)
                        r.update({
                            "run": run, "layout": layout, "conns": conns, "scenario": s, "rss_kib": peak[0] or None,
                            "front_user_us": per(before[0][0], after[0][0]) if front else None,
                            "front_sys_us": per(before[0][1], after[0][1]) if front else None,
                            "upstream_user_us": per(before[1][0], after[1][0]),
                            "upstream_sys_us": per(before[1][1], after[1][1]),
                        })
                        results.append(r)
                        done += 1
                        print(f"[{done}/{total}] run {run + 1} {layout:6} c={conns:<3} {s:12} {r['rps']:>10.0f} req/s  p50 {r['p50_us'] or 0:>8.0f} us  p99 {r['p99_us'] or 0:>8.0f} us", flush=True)
        pin(servers, "0,1")
    finally:
        procs.stop_all()

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"runs": args.runs, "duration_s": args.duration, "results": results}, f, indent=1)
    report(results, args, layouts, conns_list)
    shutil.rmtree(work, ignore_errors=True)


def med(results, layout, conns, scenario, key):
    vals = [r[key] for r in results if r["layout"] == layout and r["conns"] == conns and r["scenario"] == scenario and r[key] is not None]
    return statistics.median(vals) if vals else None


def report(results, args, layouts, conns_list):
    lines = [f"Medians of {args.runs} runs of {args.duration} s each (wrk; 1 connection: 1 thread; 50 connections: 2 threads).", ""]
    lines.append("| layout | conns | scenario | req/s | p50 | p99 | portcullis RSS |")
    lines.append("|---|---|---|---|---|---|---|")
    for layout in layouts:
        for conns in conns_list:
            for s in SCENARIOS:
                rps = med(results, layout, conns, s, "rps")
                p50 = med(results, layout, conns, s, "p50_us")
                p99 = med(results, layout, conns, s, "p99_us")
                rss = med(results, layout, conns, s, "rss_kib")
                lines.append(f"| {layout} | {conns} | {s} | {rps:,.0f} | {p50:,.0f} µs | {p99:,.0f} µs | {f'{rss / 1024:.1f} MiB' if rss else ''} |")
    lines.append("")

    def ratio(a, b, layout="shared", conns=50):
        x, y = med(results, layout, conns, a, "rps"), med(results, layout, conns, b, "rps")
        return x / y if x and y else None

    added = None
    if med(results, "shared", 1, "full", "p50_us") is not None:
        added = med(results, "shared", 1, "full", "p50_us") - med(results, "shared", 1, "direct", "p50_us")
    p99_full, p99_nginx = med(results, "shared", 50, "full", "p99_us"), med(results, "shared", 50, "nginx", "p99_us")
    rss_full = med(results, "shared", 50, "full", "rss_kib")
    rows = [
        ("pass-through req/s vs nginx proxy_pass, shared, 50 conns", ratio("passthrough", "nginx"), ">= 1.0x", lambda v: v >= 1.0, "{:.2f}x"),
        ("full policy req/s vs portcullis pass-through", ratio("full", "passthrough"), ">= 0.9x", lambda v: v >= 0.9, "{:.2f}x"),
        ("full policy req/s vs nginx proxy_pass", ratio("full", "nginx"), ">= 1.0x", lambda v: v >= 1.0, "{:.2f}x"),
        ("full policy vs nginx + auth_request", ratio("full", "nginx-auth"), ">= 1.5x", lambda v: v >= 1.5, "{:.2f}x"),
        ("added p50 latency over direct, 1 conn, full policy", added, "<= 60 µs", lambda v: v <= 60, "{:.0f} µs"),
        ("p99 at 50 conns, full policy (nginx proxy_pass p99)", p99_full, f"<= {p99_nginx:,.0f} µs" if p99_nginx else "", lambda v: p99_nginx is not None and v <= p99_nginx, "{:,.0f} µs"),
        ("RSS of portcullis (full) under the 50-connection run", rss_full / 1024 if rss_full else None, "<= 50 MB", lambda v: v <= 50, "{:.1f} MiB"),
    ]
    if med(results, "shared", 50, "passthrough", "front_user_us") is not None:
        lines.append("CPU per request, shared layout, 50 connections (medians; from /proc, counted in 10 ms clock ticks): the server in front, then the upstream behind it. nginx + auth_request counts both nginx server blocks.")
        lines.append("")
        lines.append("| scenario | front user | front system | upstream user | upstream system |")
        lines.append("|---|---|---|---|---|")
        for s in SCENARIOS:
            vals = [med(results, "shared", 50, s, k) for k in ("front_user_us", "front_sys_us", "upstream_user_us", "upstream_sys_us")]
            lines.append(f"| {s} | " + " | ".join(f"{v:.1f} µs" if v is not None else "" for v in vals) + " |")
        lines.append("")
    lines.append("| target (shared layout) | measured | target | met |")
    lines.append("|---|---|---|---|")
    for name, v, target, ok, fmt in rows:
        lines.append(f"| {name} | {fmt.format(v) if v is not None else 'n/a'} | {target} | {'yes' if v is not None and ok(v) else 'no'} |")
    lines.append("")
    for layout in layouts:
        r1 = ratio("passthrough", "nginx", layout)
        r2 = ratio("full", "nginx", layout)
        if r1 and r2:
            lines.append(f"- {layout} layout, 50 conns: pass-through/nginx {r1:.2f}x, full/nginx {r2:.2f}x, full/pass-through {ratio('full', 'passthrough', layout):.2f}x, full/nginx-auth {ratio('full', 'nginx-auth', layout):.2f}x.")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(text)
    print()
    print(text)
    chart(results, args, layouts, conns_list)


def chart(results, args, layouts, conns_list):
    data = os.path.join(args.out, "chart.dat")
    with open(data, "w") as f:
        for layout in layouts:
            for conns in conns_list:
                vals = [med(results, layout, conns, s, "rps") or 0 for s in SCENARIOS]
                f.write(f"\"{layout}, {conns} conn{'s' if conns > 1 else ''}\" " + " ".join(f"{v:.0f}" for v in vals) + "\n")
    png = os.path.join(args.out, "chart.png")
    script = f"""
set terminal pngcairo size 1000,520 font "sans,10" noenhanced
set output "{png}"
set title "Requests per second (median of {args.runs} runs of {args.duration} s), bench/upstream behind each"
set style data histograms
set style histogram cluster gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key outside right top
set ylabel "req/s"
set yrange [0:*]
set grid ytics
plot "{data}" using 2:xtic(1) title "direct", '' using 3 title "nginx", '' using 4 title "nginx + auth_request", '' using 5 title "portcullis pass-through", '' using 6 title "portcullis full policy"
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    os.remove(data)
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
