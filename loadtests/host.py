#!/usr/bin/env python3
"""What this host charges for the hops a request path makes, for loadtests/run.sh's report.

    host.py [--rounds 20000]

A request that crosses processes pays, per hop, for waking the process that sleeps on the other
end. On a VM that cost depends on the host more than on the code: waking a vCPU that has gone
idle is an exit to the hypervisor unless the guest polls before it halts. So every run records:

- the vCPUs this process may use, and the guest's halt polling
  (/sys/module/haltpoll/parameters/guest_halt_poll_ns; 0 is off, absent means no haltpoll
  driver);
- a pipe ping-pong between two processes, as a median of 5 batches of --rounds round trips:
  both on one CPU (each wake-up is a plain context switch) and on two CPUs (each wake-up reaches
  a CPU that went idle while it waited). Half the difference is what one wake-up across CPUs
  costs over one on the same CPU.

Prints one JSON object. Python stdlib only; the interpreter adds about the same time to both
layouts, so their difference is the host's.
"""

import argparse
import json
import os
import statistics
import sys
import time


def ping_pong(cpus, rounds):
    """Median of 5 batches: ns per round trip between this process and a child over two pipes,
    this process on cpus[0] and the child on cpus[1]."""
    a_r, a_w = os.pipe()
    b_r, b_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.sched_setaffinity(0, {cpus[1]})
            while True:
                c = os.read(a_r, 1)
                if not c or c == b"q":
                    break
                os.write(b_w, c)
        finally:
            os._exit(0)
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpus[0]})
    try:
        batches = []
        for _ in range(5):
            t0 = time.perf_counter_ns()
            for _ in range(rounds):
                os.write(a_w, b"x")
                os.read(b_r, 1)
            batches.append((time.perf_counter_ns() - t0) / rounds)
        return statistics.median(batches)
    finally:
        os.write(a_w, b"q")
        os.waitpid(pid, 0)
        os.sched_setaffinity(0, saved)
        for fd in (a_r, a_w, b_r, b_w):
            os.close(fd)


def halt_poll_ns():
    try:
        with open("/sys/module/haltpoll/parameters/guest_halt_poll_ns") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=20000)
    args = p.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    out = {"cpus": len(cpus), "guest_halt_poll_ns": halt_poll_ns()}
    same = ping_pong((cpus[0], cpus[0]), args.rounds)
    out["round_trip_same_cpu_us"] = round(same / 1000, 1)
    if len(cpus) > 1:
        across = ping_pong((cpus[0], cpus[1]), args.rounds)
        out["round_trip_across_cpus_us"] = round(across / 1000, 1)
        # Two wake-ups per round trip.
        out["wake_across_cpus_extra_us"] = round((across - same) / 2000, 1)
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
