#!/usr/bin/env python3
"""Resident memory of `portcullis serve`: idle, then holding N concurrent
keep-alive connections, each of which has just had a request answered.

    python3 bench/rss.py [--bin target/release/portcullis]
                         [--config examples/quickstart/portcullis.toml] [--conns 1000]

Everything runs on 127.0.0.1 and is bounded: connections are opened within
the gateway's header-read timeout and the gateway is stopped by its PID.
"""
import argparse
import asyncio
import re
import subprocess
import sys
import time


def rss_kib(pid, field="VmRSS:"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(field)


async def one(addr, path, hold):
    host, port = addr
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    await reader.readexactly(length)
    await hold.wait()
    writer.close()
    return status


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/portcullis")
    ap.add_argument("--config", default="examples/quickstart/portcullis.toml")
    ap.add_argument("--path", default="/public/hello")
    ap.add_argument("--conns", type=int, default=1000)
    args = ap.parse_args()

    gw = subprocess.Popen(
        [args.bin, "serve", "--config", args.config, "--listen", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        addr = None
        for line in gw.stderr:
            m = re.search(r"listening on https?://([\d.]+):(\d+)", line)
            if m:
                addr = (m.group(1), int(m.group(2)))
                break
        if addr is None:
            sys.exit("the gateway did not start")
        time.sleep(1.0)
        idle = rss_kib(gw.pid)

        async def run():
            hold = asyncio.Event()
            tasks = [asyncio.create_task(one(addr, args.path, hold)) for _ in range(args.conns)]
            # Every connection answered and still open: measure, then release.
            while True:
                await asyncio.sleep(0.1)
                opened = int(
                    subprocess.run(
                        ["ss", "-Htn", "state", "established", f"( sport = :{addr[1]} )"],
                        capture_output=True,
                        text=True,
                    ).stdout.count("\n")
                )
                if opened >= args.conns or any(t.done() for t in tasks):
                    break
            await asyncio.sleep(0.5)
            loaded = rss_kib(gw.pid)
            hold.set()
            statuses = await asyncio.gather(*tasks, return_exceptions=True)
            return loaded, statuses

        loaded, statuses = asyncio.run(run())
        peak = rss_kib(gw.pid, "VmHWM:")
        ok = sum(1 for s in statuses if s == 200)
        print(f"idle RSS: {idle / 1024:.1f} MiB")
        print(f"RSS with {args.conns} keep-alive connections open: {loaded / 1024:.1f} MiB ({ok} answered 200)")
        print(f"peak RSS: {peak / 1024:.1f} MiB")
    finally:
        gw.terminate()
        gw.wait(timeout=10)


if __name__ == "__main__":
    main()
