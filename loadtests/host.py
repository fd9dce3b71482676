#!/usr/bin/env python3
"""What this host charges for the hops a request path makes, for loadtests/run.sh's report.

    host.py [--rounds 20000]

A request that crosses processes pays, per hop, for waking the process that sleeps on the other
end. On a VM that cost depends on the host more than on the code: waking a vCPU that has gone
idle is an exit to the hypervisor unless the guest polls before it halts. So every run records:

- the CPUs this process may use;
- how idle CPUs wait: the cpuidle driver and governor
  (/sys/devices/system/cpu/cpuidle/current_driver, current_governor_ro), and with the haltpoll
  governor its poll window (/sys/module/haltpoll/parameters/guest_halt_poll_ns: the most it
  polls before halting, 0 is never; the window shrinks and grows with what it sees); `idle=` on
  the kernel command line, if any;
- a pipe ping-pong between two processes, as a median of 5 batches of --rounds round trips:
  both on one CPU (each wake-up is a plain context switch) and on two CPUs (each wake-up reaches
  a CPU that went idle while it waited: the worst case). Half the difference is what one
  wake-up across CPUs costs over one on the same CPU.

Prints one JSON object; a field that cannot be read is null. Takes about 5 s. Python stdlib
only; the interpreter adds about the same time to both layouts, so their difference is the
host's.
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
        # Only its own ends: if this process dies, the parent's read ends at once (EOF).
        os.close(a_w)
        os.close(b_r)
        code = 1
        try:
            os.sched_setaffinity(0, {cpus[1]})
            while True:
                c = os.read(a_r, 1)
                if not c:
                    break
                os.write(b_w, c)
            code = 0
        finally:
            os._exit(code)
    os.close(a_r)
    os.close(b_w)
    saved = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {cpus[0]})
        batches = []
        for _ in range(5):
            t0 = time.perf_counter_ns()
            for _ in range(rounds):
                os.write(a_w, b"x")
                if not os.read(b_r, 1):
                    raise RuntimeError("the ping-pong child ended early")
            batches.append((time.perf_counter_ns() - t0) / rounds)
        return statistics.median(batches)
    finally:
        # EOF ends the child's loop.
        os.close(a_w)
        _, status = os.waitpid(pid, 0)
        os.close(b_r)
        os.sched_setaffinity(0, saved)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError("the ping-pong child failed (could it be pinned to its CPU?)")


def read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def idle_state():
    base = "/sys/devices/system/cpu/cpuidle/"
    out = {
        "cpuidle_driver": read(base + "current_driver"),
        "cpuidle_governor": read(base + "current_governor_ro") or read(base + "current_governor"),
        "kernel_idle": next((a for a in (read("/proc/cmdline") or "").split() if a.startswith("idle=")), None),
        "guest_halt_poll_ns": None,
    }
    if out["cpuidle_governor"] == "haltpoll":
        ns = read("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
        out["guest_halt_poll_ns"] = int(ns) if ns and ns.isdigit() else None
    return out


def positive(s):
    n = int(s)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=positive, default=20000)
    args = p.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    out = {"cpus": len(cpus), **idle_state()}
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
