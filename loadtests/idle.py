#!/usr/bin/env python3
"""Workload idle of loadtests/run.sh: what 10,000 idle keep-alive connections cost a server in memory.

    idle.py --url http://127.0.0.1:PORT/ --body JSON --pid PID [--pid PID ...]
            [--connections 10000] [--wait 2] [--xff ADDR] [--metrics URL --metric NAME]

Reads the server's VmRSS (the sum over every --pid: nginx's master and workers), then opens
--connections TCP connections from this one process (RLIMIT_NOFILE raised as far as the hard
limit allows), each sending one POST of --body as HTTP/1.1 keep-alive and reading the whole answer
(it must be a 200), so every one is a real keep-alive connection the server has served; connects
go in batches of 64 (below every listen backlog). Then it idles --wait seconds, reads VmRSS again,
the server's own connection count (--metric of the Prometheus page --metrics, e.g. the gateway's
gateway_http_open_connections) and the kernel's count of established sockets on the server's port
(`ss`), checks that the server closed none of them, closes them all, waits a second and reads
VmRSS once more. Prints one JSON object: the counts, the RSS readings in KiB and
kib_per_connection = (rss_after - rss_before) / connections open.

Python stdlib only. The RSS delta holds user-space memory only (socket buffers are the kernel's).
"""

import argparse
import json
import resource
import select
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

# Connections opened before their answers are read: below every listen backlog here (the gateway's
# and the ceiling's are 128; a full accept queue drops the SYN, and the client retries after 1 s).
BATCH = 64


def rss_kb(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def metric(url, name):
    if not url:
        return None
    try:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == name:
            return int(float(parts[1]))
    return None


def established(port):
    try:
        out = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return sum(1 for line in out.splitlines() if line.strip())


def read_answer(sock):
    """Reads one HTTP/1.1 response (Content-Length or chunked); returns (status, body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the headers")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}

    def more():
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        return chunk

    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(rest) < n:
            rest += more()
        return status, rest[:n]
    if "chunked" in headers.get("transfer-encoding", ""):
        body = b""
        while True:
            while b"\r\n" not in rest:
                rest += more()
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(rest) < size + 2:
                rest += more()
            body += rest[:size]
            rest = rest[size + 2:]
            if size == 0:
                return status, body
    raise ConnectionError("answer with neither Content-Length nor chunked encoding")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--body", required=True)
    p.add_argument("--pid", type=int, action="append", required=True)
    p.add_argument("--connections", type=int, default=10000)
    p.add_argument("--wait", type=float, default=2.0)
    p.add_argument("--xff", default="")
    p.add_argument("--metrics", default="")
    p.add_argument("--metric", default="")
    a = p.parse_args()

    want = a.connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = want + 256
    if soft < need:
        limit = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        soft = limit
    want = min(want, soft - 256)

    u = urllib.parse.urlsplit(a.url)
    host, port = u.hostname, u.port or 80
    body = a.body.encode()
    xff = f"X-Forwarded-For: {a.xff}\r\n" if a.xff else ""
    request = (f"POST {u.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n"
               f"Content-Type: application/json\r\n{xff}Content-Length: {len(body)}\r\n\r\n").encode() + body

    out = {"wanted": want, "nofile": soft, "wait_s": a.wait}
    out["server_count_before"] = metric(a.metrics, a.metric)
    out["rss_before_kb"] = rss_kb(a.pid)
    socks, failed, first_error = [], 0, None
    t0 = time.monotonic()
    while len(socks) + failed < want:
        batch = []
        for _ in range(min(BATCH, want - len(socks) - failed)):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.settimeout(10)
                s.connect((host, port))
                s.sendall(request)
                batch.append(s)
            except OSError as e:
                failed += 1
                first_error = first_error or repr(e)
                s.close()
        for s in batch:
            try:
                status, answer = read_answer(s)
                if status != 200 or b'"result"' not in answer:
                    raise ConnectionError(f"HTTP {status}: {answer[:200]!r}")
                socks.append(s)
            except (OSError, ValueError, IndexError) as e:
                failed += 1
                first_error = first_error or repr(e)
                s.close()
    out["open_s"] = round(time.monotonic() - t0, 2)
    out["failed"] = failed
    out["first_error"] = first_error
    time.sleep(a.wait)
    out["rss_after_kb"] = rss_kb(a.pid)
    out["server_count"] = metric(a.metrics, a.metric)
    out["established"] = established(port)
    # A socket readable now was closed by the server (EOF): it no longer counts as open.
    poller = select.poll()
    for s in socks:
        poller.register(s, select.POLLIN | select.POLLHUP)
    closed = len(poller.poll(0))
    out["connections"] = len(socks) - closed
    out["closed_by_server"] = closed
    out["idle_s"] = round(time.monotonic() - t0, 2)
    for s in socks:
        s.close()
    time.sleep(1)
    out["rss_closed_kb"] = rss_kb(a.pid)
    out["kib_per_connection"] = round((out["rss_after_kb"] - out["rss_before_kb"]) / max(1, out["connections"]), 2)
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
