#!/usr/bin/env python3
"""Turns the records of one loadtests/run.sh run into Markdown. Python stdlib only.

    report.py failover --events FILE... --kill-at UNIX_TIME --region NAME   analyse workload 4, print JSON
    report.py table --results results.jsonl                                print the ratio table
    report.py results --results results.jsonl --command CMD                print the whole RESULTS.md section

results.jsonl holds one JSON object per line, `kind` being one of: wrk (one wrk run), stale
(workload 3 check), failover, pool, mem (RSS and edge cache readings), tenant (workload key: the
tenant's calls and refusals counted by the gateway), edge (workload edge: the serving node's cache
counters around the measured run), idle (workload idle: one target's idle.py readings), info
(settings, machine).
"""

import argparse
import json
import statistics
import sys

TARGETS = [("gateway", "gateway + edge"), ("gateway-key", "gateway + edge, tenant key in the URL"),
           ("gateway-demo", "gateway + edge, demo config (shipped defaults)"),
           ("gateway-edge", "gateway (tiers off) + edge cache"),
           ("nginx", "nginx proxy_cache"), ("anvil", "anvil direct"), ("ceiling", "bare hyper (ceiling)")]

# Workload edge (the edge tier on its own) must reach at least this share of nginx's req/s.
EDGE_GOAL = 1.0

# Workload 2-c1: the gateway path may add at most this much to anvil's own p50 (µs).
MISS_GOAL_US = 100

# Workload key: the keyed run may be at most this much slower than the keyless one beside it.
KEY_BUDGET = 0.05

WORKLOADS = [
    ("1a", "1 cache hit: `eth_getBalance` at `{blockHash: genesis}`, c32"),
    ("1b", "1 cache hit: `eth_getBalance` at `0x0`, c32"),
    ("1c", "1 cache hit by hash, per-request ids (as real clients send), c32"),
    ("1d", "1 hot read at `latest` (changes every block: tip answers, held while the node's state is), c32"),
    ("edge", "E edge tier: 1a through a gateway with both its tiers off, answered from the edge node's cache, c32"),
    ("key", "K cache hit (1a) keyless, then as a tenant with its key in the URL (`/v1/bench-key`), c32"),
    ("2-c1", "2 miss: `eth_getBalance` random address at `latest`, c1"),
    ("2-c32", "2 miss: `eth_getBalance` random address at `latest`, c32"),
    ("3", "3 mixed Zipf reads while blocks are produced, c32"),
    ("4", "4 failover: a fresh `latest` read per request, SIGKILL the serving edge node mid-run, c32"),
    ("5", "5 batch of 50 `eth_getBalance` by hash, c32"),
    ("fill", "M cache fill: random addresses by hash (every answer cached), c32"),
    ("soak", "S soak: the cache-fill load for the whole soak run (memory below), c32"),
]


# ---------------------------------------------------------------- failover


def cmd_failover(a):
    events = []
    for path in a.events:
        try:
            for line in open(path):
                t, status, region = line.split()
                events.append((float(t), status, region))
        except FileNotFoundError:
            pass
    events.sort()
    k = a.kill_at
    after = [e for e in events if e[0] >= k]
    fails = [e for e in after if e[1] == "fail"]
    fails_before = sum(1 for e in events if e[0] < k and e[1] == "fail")
    other = [e for e in after if e[1] == "ok" and e[2] not in (a.region, "-")]
    out = {
        "killed_region": a.region,
        "failed_before_kill": fails_before,
        "failed_after_kill": len(fails),
        "first_failure_ms": round((fails[0][0] - k) * 1000, 1) if fails else None,
        "last_failure_ms": round((fails[-1][0] - k) * 1000, 1) if fails else None,
        "first_answer_from": other[0][2] if other else None,
        "first_other_answer_ms": round((other[0][0] - k) * 1000, 1) if other else None,
    }
    ends = [x for x in (out["last_failure_ms"], out["first_other_answer_ms"]) if x is not None]
    # Recovered once the other node answers and nothing fails any more.
    out["recover_ms"] = max(ends) if other else None
    print(json.dumps(out))


# ---------------------------------------------------------------- tables


def load(path):
    recs = []
    for line in open(path):
        line = line.strip()
        if line:
            recs.append(json.loads(line))
    return merge_rounds(recs)


# wrk figures a workload run in rounds reports as the median over its rounds; the rest add up.
MEDIAN = ("rps", "p50_us", "p90_us", "p99_us", "mean_us")


def merge_rounds(recs):
    """Runs made in rounds (`round` in the record, LT_ROUNDS) become one record per workload and
    target, where the first round was: latency and req/s the median over the rounds, counts
    (requests, failures, hits) and CPU time summed, so CPU per request covers every round. The
    rounds' own req/s stay in `rounds`."""
    groups, out = {}, []
    for r in recs:
        if r["kind"] != "wrk" or "round" not in r:
            out.append(r)
            continue
        key = (r["workload"], r["target"])
        if key not in groups:
            groups[key] = []
            out.append(key)
        groups[key].append(r)
    merged = []
    for r in out:
        if not isinstance(r, tuple):
            merged.append(r)
            continue
        rs = groups[r]
        m = {k: v for k, v in rs[0].items() if k not in ("wrk", "cpu_before", "cpu_after", "round")}
        w = {}
        for k in rs[0]["wrk"]:
            vals = [x["wrk"][k] for x in rs if isinstance(x["wrk"].get(k), (int, float))]
            if len(vals) != len(rs):
                w[k] = rs[0]["wrk"][k]
            elif k in MEDIAN:
                w[k] = statistics.median(vals)
            elif k == "max_us":
                w[k] = max(vals)
            else:
                w[k] = sum(vals)
        m["wrk"] = w
        m["rounds"] = [x["wrk"]["rps"] for x in sorted(rs, key=lambda x: x["round"])]
        comps = {c for x in rs for c in list(x["cpu_before"]) + list(x["cpu_after"])}
        m["cpu_before"] = {c: 0 for c in comps}
        m["cpu_after"] = {}
        for c in comps:
            deltas = [x["cpu_after"].get(c, 0) - x["cpu_before"].get(c, 0) for x in rs]
            # A process that went away in some round (its delta below 0) stays unknown.
            m["cpu_after"][c] = -1 if any(d < 0 for d in deltas) else sum(deltas)
        merged.append(m)
    return merge_edge_rounds(merged)


def merge_edge_rounds(recs):
    """Workload E's node counts, one record per round (around each measured run), as one record
    whose `before` is zero and `after` the counts the measured runs added up to."""
    rounds = [r for r in recs if r["kind"] == "edge" and "round" in r]
    if not rounds:
        return recs
    keys = rounds[0]["after"].keys()
    total = {"kind": "edge", "region": rounds[0]["region"], "before": {k: 0 for k in keys},
             "after": {k: sum(r["after"][k] - r["before"][k] for r in rounds) for k in keys}}
    out = [r for r in recs if not (r["kind"] == "edge" and "round" in r)]
    out.append(total)
    return out


def rounds_table(recs):
    """Each round's req/s of the workloads run in rounds, beside the median the tables use."""
    rows = [r for r in recs if r["kind"] == "wrk" and "rounds" in r]
    if not rows:
        return ""
    n = max(len(r["rounds"]) for r in rows)
    out = ["| workload | target | " + " | ".join(f"round {i + 1} req/s" for i in range(n)) + " | median | spread |",
           "| --- | --- | " + " | ".join("---:" for _ in range(n)) + " | ---: | ---: |"]
    for r in rows:
        rps = r["rounds"]
        cells = [f"{x:,.0f}" for x in rps] + [""] * (n - len(rps))
        spread = (max(rps) - min(rps)) / r["wrk"]["rps"] if r["wrk"]["rps"] else 0
        out.append(f"| {r['workload']} | {r['target']} | " + " | ".join(cells)
                   + f" | {r['wrk']['rps']:,.0f} | {100 * spread:.0f} % |")
    return "\n".join(out)


COMPONENTS = ["gateway", "edge", "nginx", "anvil", "redis", "ceiling"]


def cpu_us(rec):
    """CPU µs per request by component (None where a process went away mid-run), and the total."""
    if "cpu_before" not in rec:
        return None, None
    reqs = max(1, rec["wrk"]["requests"])
    per = {}
    for c in COMPONENTS:
        d = rec["cpu_after"].get(c, 0) - rec["cpu_before"].get(c, 0)
        per[c] = d / rec["clk_tck"] / reqs * 1e6 if d >= 0 else None
    total = None if any(v is None for v in per.values()) else sum(per.values())
    return per, total


def ratio(x, y):
    if x is None or y is None or y == 0:
        return ""
    return f"{x / y:.2f}x"


def us(x):
    return "" if x is None else f"{x:,.0f}"


def main_table(recs):
    wrk = {(r["workload"], r["target"]): r["wrk"] for r in recs if r["kind"] == "wrk"}
    cpu = {(r["workload"], r["target"]): cpu_us(r)[1] for r in recs if r["kind"] == "wrk"}
    stale = {r["target"]: r["stale"] for r in recs if r["kind"] == "stale"}
    failover = next((r for r in recs if r["kind"] == "failover"), None)
    fill = next((r for r in recs if r["kind"] == "fill"), None)
    edge = next((r for r in recs if r["kind"] == "edge"), None)
    rows = [
        "| workload | target | req/s | p50 µs | p99 µs | req/s vs nginx | req/s vs anvil | req/s vs ceiling "
        "| req/s vs keyless | p99 vs nginx | added p50 / p99 over anvil µs | server CPU µs/req | cache hits "
        "| failed | stale (sampled) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for wl, title in WORKLOADS:
        present = [(t, name) for t, name in TARGETS if (wl, t) in wrk]
        if not present:
            continue
        ng, an, kl = wrk.get((wl, "nginx")), wrk.get((wl, "anvil")), wrk.get((wl, "gateway"))
        ce = wrk.get((wl, "ceiling"))
        for i, (t, name) in enumerate(present):
            r = wrk[(wl, t)]
            hits = ""
            if r["hit"] + r["nonhit"] > 0:
                hits = f"{100.0 * r['hit'] / (r['hit'] + r['nonhit']):.1f} %"
                if r.get("hit_gateway_tier"):
                    hits += f" ({100.0 * r['hit_gateway_tier'] / (r['hit'] + r['nonhit']):.1f} % gw tier)"
            if wl == "edge" and t == "gateway-edge" and edge:
                share = edge_hit_share(edge)
                if share is not None:
                    hits += f" (node's cache: {100.0 * share:.1f} %)"
            added = ""
            if an is not None and t != "anvil":
                added = f"{r['p50_us'] - an['p50_us']:+,.0f} / {r['p99_us'] - an['p99_us']:+,.0f}"
            st = ""
            if wl == "3" and t in stale:
                s = stale[t]
                st = f"{s['stale']} / {s['checked']}"
            c = cpu.get((wl, t))
            vs_keyless = ratio(r["rps"], kl and kl["rps"]) if t == "gateway-key" else ""
            rows.append("| {} | {} | {:,.0f} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                title if i == 0 else "", name, r["rps"], us(r["p50_us"]), us(r["p99_us"]),
                ratio(r["rps"], ng and ng["rps"]), ratio(r["rps"], an and an["rps"]),
                ratio(r["rps"], ce and ce["rps"]), vs_keyless,
                ratio(r["p99_us"], ng and ng["p99_us"]), added, "" if c is None else f"{c:,.0f}", hits,
                f"{r['failed']:,} of {r['requests']:,}", st))
    notes = []
    c_note = ceiling_note(wrk)
    if c_note:
        notes.append(c_note)
    e_note = edge_note(wrk, edge)
    if e_note:
        notes.append(e_note)
    m_note = miss_note(wrk, host_record(recs))
    if m_note:
        notes.append(m_note)
    key_note = tenant_note(wrk, cpu, next((r for r in recs if r["kind"] == "tenant"), None))
    if key_note:
        notes.append(key_note)
    if failover:
        f = failover["failover"]
        failed = f"failed requests after the kill: {f['failed_after_kill']}"
        if f["failed_after_kill"]:
            failed += f" (first at {fmt_ms(f['first_failure_ms'])}, last at {fmt_ms(f['last_failure_ms'])})"
        notes.append(
            f"Workload 4: the serving node ({f['killed_region']}) was SIGKILLed {failover['kill_after_s']} s "
            f"into the run (times below are from the kill); {failed}; first answer "
            f"from {f['first_answer_from']} at {fmt_ms(f['first_other_answer_ms'])}; "
            f"**recovered after {fmt_ms(f['recover_ms'])}**; slowest request "
            f"{wrk.get(('4', 'gateway'), {}).get('max_us', 0) / 1000:,.0f} ms.")
    if fill:
        notes.append(
            f"Cache fill: {fill['misses']:,} answers stored in the serving edge cache "
            f"(~{fill['inserted_bytes'] / 2**20:,.1f} MiB by the cache's own weigher, "
            f"{fill['inserted_bytes'] / fill['max_bytes']:.1f}x the bound); "
            f"`edge_cache_bytes` afterwards {fill['cache_bytes_after']:,} of `max_bytes` {fill['max_bytes']:,} "
            f"-> bound {'**held**' if fill['cache_bytes_after'] <= fill['max_bytes'] else '**EXCEEDED**'}.")
    for t, s in stale.items():
        detail = (f"Stale check, {dict(TARGETS)[t]}: {s['checked']} answers checked "
                  f"({s['latest_checked']} `latest`, {s['block_checked']} by block/static), "
                  f"{s['stale']} stale ({s['stale_latest']} `latest`, i.e. "
                  f"{100.0 * s['stale_latest'] / max(1, s['latest_checked']):.1f} % of `latest` answers; "
                  f"{s['stale_block']} by block; "
                  f"{s['mismatch']} matched none of the last 16 blocks), "
                  f"up to {s['max_blocks_behind']} block(s) behind.")
        notes.append(detail)
    audit = next((r for r in recs if r["kind"] == "audit"), None)
    if audit:
        notes.append(audit_note(audit))
    soak = next((r for r in recs if r["kind"] == "soak"), None)
    if soak:
        notes.append(soak_note(soak))
    return "\n".join(rows), notes


def ceiling_note(wrk):
    """Workload 1 (1a, 1b): both gateways' hits as a share of the ceiling, and against nginx."""
    parts = []
    for wl in ("1a", "1b"):
        ce, ng = wrk.get((wl, "ceiling")), wrk.get((wl, "nginx"))
        if not ce:
            continue
        cells = []
        for t, name in (("gateway", "tuned gateway"), ("gateway-demo", "demo config"), ("nginx", "nginx")):
            r = wrk.get((wl, t))
            if not r:
                continue
            cell = f"{name} {r['rps'] / ce['rps']:.2f}x"
            if t != "nginx" and ng:
                cell += (f" ({ratio(r['rps'], ng['rps'])} nginx's req/s, "
                         f"p99 {ratio(r['p99_us'], ng['p99_us'])} nginx's)")
            cells.append(cell)
        parts.append(f"{wl}: " + "; ".join(cells))
    if not parts:
        return ""
    some = wrk.get(("1a", "ceiling")) or wrk.get(("1b", "ceiling"))
    return (f"Ceiling (workload 1): a bare hyper server on one thread answering one fixed body "
            f"({some['rps']:,.0f} req/s in {'1a' if wrk.get(('1a', 'ceiling')) else '1b'}) is the most "
            f"any HTTP gateway can answer on this machine; cache hits as a share of it: " + ". ".join(parts) + ".")


def host_record(recs):
    """loadtests/host.py's reading of the host, if the run has one."""
    return next((r["host"] for r in recs if r["kind"] == "host"), None)


def idle_waiting(host):
    """How idle CPUs wait for work (host.py): what decides the cost of waking one."""
    if "cpuidle_governor" in host:
        gov = host["cpuidle_governor"]
        if gov is None:
            out = "cpuidle governor unknown"
        elif gov != "haltpoll":
            out = f"cpuidle governor {gov} (no guest halt polling)"
        else:
            ns = host.get("guest_halt_poll_ns")
            out = ("guest halt polling off (haltpoll governor, guest_halt_poll_ns 0)" if ns == 0
                   else f"guest halt polling up to {ns:,} ns" if ns else "guest halt polling unknown")
    else:
        # A record from before host.py read the governor: the poll window alone.
        ns = host.get("guest_halt_poll_ns")
        out = "guest halt polling " + ("unknown" if ns is None else "off" if ns == 0 else f"{ns:,} ns")
    if host.get("kernel_idle"):
        out += f", kernel `{host['kernel_idle']}`"
    return out


def host_line(host):
    """What a wake-up costs on this host (loadtests/host.py)."""
    n = host["cpus"]
    out = (f"- Host (loadtests/host.py): {n} CPU{'s' if n != 1 else ''} for this run; {idle_waiting(host)}; a pipe "
           f"round trip between two processes takes {host['round_trip_same_cpu_us']} µs on one CPU")
    if "round_trip_across_cpus_us" in host:
        extra = host["wake_across_cpus_extra_us"]
        out += (f" and {host['round_trip_across_cpus_us']} µs across two, so a wake-up that reaches a CPU gone "
                f"idle costs {max(extra, 0.0)} µs more than one on the same CPU")
    return out


def miss_note(wrk, host):
    """Workload 2-c1: what the gateway path adds to anvil's p50 against the goal, beside
    nginx's one hop and what a wake-up across CPUs costs on this host."""
    r, an, ng = (wrk.get(("2-c1", t)) for t in ("gateway", "anvil", "nginx"))
    if not (r and an):
        return ""
    added = r["p50_us"] - an["p50_us"]
    verdict = "**met**" if added <= MISS_GOAL_US else "**not met**"
    out = (f"Miss at c1 (2-c1): the gateway path adds {added:,.0f} µs to anvil's p50 of {an['p50_us']:,.0f} µs "
           f"(goal at most {MISS_GOAL_US} µs: {verdict})")
    if ng:
        out += f"; nginx, one hop, adds {ng['p50_us'] - an['p50_us']:,.0f} µs"
    if host and "wake_across_cpus_extra_us" in host:
        out += (f". A request is handed from process to process six times on the gateway path (wrk, gateway, "
                f"node, anvil and back), four times through nginx and twice direct; on this host a hand-off "
                f"that wakes a process on a CPU gone idle costs {max(host['wake_across_cpus_extra_us'], 0.0)} µs "
                f"more than one on the same CPU (Host, above). Which hand-offs cross CPUs is the scheduler's "
                f"choice: loadtests/miss.sh runs the path both ways, to tell the wake-ups from the work")
    return out + "."


def edge_hit_share(edge):
    """Workload edge: the share of the serving node's cache look-ups it answered itself."""
    d = {k: edge["after"][k] - edge["before"][k] for k in edge["after"]}
    total = sum(d.values())
    return d["hit"] / total if total else None


def edge_note(wrk, edge):
    """Workload edge: the edge tier against nginx, and how much the node's own cache answered."""
    r, ng = wrk.get(("edge", "gateway-edge")), wrk.get(("edge", "nginx"))
    if not r:
        return ""
    out = "Edge tier (E): through a gateway with both its tiers off (`[cache] max_bytes = 0`, `tip_max_bytes = 0`)"
    if ng and ng["rps"]:
        x = r["rps"] / ng["rps"]
        verdict = "**met**" if x >= EDGE_GOAL else "**not met**"
        out += (f", {r['rps']:,.0f} req/s = {x:.2f}x nginx's {ng['rps']:,.0f} (goal at least "
                f"{EDGE_GOAL:.1f}x: {verdict}), p99 {ratio(r['p99_us'], ng['p99_us'])} nginx's")
    if edge:
        d = {k: edge["after"][k] - edge["before"][k] for k in edge["after"]}
        share = edge_hit_share(edge)
        out += (f"; the serving node ({edge['region']}) counted {d['hit']:,} hits, {d['miss']:,} misses, "
                f"{d['bypass']:,} bypassed and {d['negative']:,} negative in its cache over the measured run "
                f"(`edge_cache_requests_total`)")
        if share is not None:
            out += f": **{100.0 * share:.1f} % answered from the node's own cache**"
        calls = r["requests"]
        if d["hit"] + d["miss"] + d["bypass"] + d["negative"] < 0.9 * calls:
            out += f" (fewer look-ups than the {calls:,} requests: some answers came from elsewhere)"
    return out + "."


def idle_table(recs):
    """Workload idle: memory per idle keep-alive connection, per target."""
    idle = [r for r in recs if r["kind"] == "idle"]
    if not idle:
        return ""
    names = dict(TARGETS)
    rows = ["| target | connections open | server's own count | RSS before MiB | RSS after MiB "
            "| KiB per connection |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in idle:
        x = r["idle"]
        own = "" if x.get("server_count") is None else f"{x['server_count']:,}"
        if x.get("established") is not None:
            own += f"{' / ' if own else ''}{x['established']:,} (kernel)"
        opened = f"{x['connections']:,}"
        if x.get("failed") or x.get("closed_by_server"):
            opened += f" ({x.get('failed', 0):,} failed, {x.get('closed_by_server', 0):,} closed by the server)"
        rows.append(f"| {names.get(r['target'], r['target'])} | {opened} | {own} | "
                    f"{x['rss_before_kb'] / 1024:,.1f} | {x['rss_after_kb'] / 1024:,.1f} | "
                    f"{x['kib_per_connection']:,.2f} |")
    first = idle[0]["idle"]
    errs = [f"{r['target']}: {r['idle']['first_error']}" for r in idle if r["idle"].get("first_error")]
    return ("\n".join(rows) + "\n\n"
            f"Each of {first['wanted']:,} connections sent one request (1a's body) and read its answer, then "
            f"all idled {first.get('wait_s', 2):g} s before the readings; KiB per "
            "connection = (RSS after - RSS before) / connections open, user-space memory only (socket buffers "
            "are the kernel's); nginx: master and workers (its connection structures for every "
            "`worker_connections` are allocated at start, so they are in RSS before); server's own count: "
            "the gateway's `gateway_http_open_connections`, and established sockets on the server's port."
            + (" First errors: " + "; ".join(errs) if errs else ""))


def tenant_note(wrk, cpu, tenant):
    """Workload key: the keyed runs against the keyless ones beside them (medians over the
    rounds), and the verdict."""
    kl, key = wrk.get(("key", "gateway")), wrk.get(("key", "gateway-key"))
    if not kl or not key:
        return ""
    r = key["rps"] / kl["rps"] if kl["rps"] else 0.0
    budget = f"{100 * KEY_BUDGET:.0f} %"
    verdict = ("**within**" if r >= 1 - KEY_BUDGET else "**outside**") + f" the {budget} budget"
    c_kl, c_key = cpu.get(("key", "gateway")), cpu.get(("key", "gateway-key"))
    cpu_s = ""
    if c_kl is not None and c_key is not None:
        cpu_s = f"; server CPU {c_key:,.1f} against {c_kl:,.1f} µs/req (Redis included)"
    counted = ""
    if tenant:
        counted = (f"; the gateway counted {tenant['calls']:,} calls for tenant `{tenant['tenant']}` "
                   f"(warm-up included) and refused {tenant['limited']:,}")
    return (f"Tenant key (K): with the key in the URL {key['rps']:,.0f} req/s against {kl['rps']:,.0f} "
            f"keyless, measured in turns (medians): {r:.2f}x ({100.0 * (r - 1):+.1f} %) -> {verdict} "
            f"(at most {budget} fewer requests per second); p50 {us(key['p50_us'])} against "
            f"{us(kl['p50_us'])} µs, p99 {us(key['p99_us'])} against {us(kl['p99_us'])} µs{cpu_s}{counted}. "
            f"Two runs differ with nothing changed (README.md, Known limitations): a verdict near the "
            f"line wants `LT_ONLY=key` again.")


def audit_note(rec):
    """Workload 3 (gateway, warm-up included): the calls audits sent against those served."""
    d = {k: rec["after"][k] - rec["before"][k] for k in rec["after"]}
    audited = d["audits"] - d["skipped"]
    return (f"Audits (workload 3, default `[audit] share`): {audited:,} answers audited "
            f"({d['skipped']:,} skipped, {d['wrong']:,} shown wrong), sending {d['audit_calls']:,} calls "
            f"to nodes: **{100.0 * d['audit_calls'] / max(1, d['calls']):.2f} % of the {d['calls']:,} calls "
            f"callers sent**, {100.0 * d['audit_calls'] / max(1, d['node_calls']):.2f} % of the "
            f"{d['node_calls']:,} the nodes answered.")


def soak_note(soak):
    """Memory over the soak run: growth between the middle and the end, once both caches are full."""
    smp = soak["samples"]
    if len(smp) < 4:
        return f"Soak: only {len(smp)} memory samples; no verdict."
    mid, end = smp[len(smp) // 2], smp[-1]
    def grow(key):
        a, b = mid[key], end[key]
        return f"{a / 1024:,.1f} -> {b / 1024:,.1f} MiB ({(b - a) / 1024:+,.1f} MiB, {100.0 * (b - a) / max(1, a):+.1f} %)"
    peak_edge = max(x["edge_cache_bytes"] for x in smp)
    peak_gw = max(x["gateway_cache_bytes"] for x in smp)
    worst = max((end[k] - mid[k]) / max(1, mid[k]) for k in ("gateway_rss_kb", "edge_rss_kb"))
    verdict = "**no growth**" if worst <= 0.05 else "**grew**"
    return (f"Soak ({soak['duration']}, {len(smp)} samples): RSS from the middle of the run (t = {mid['t']} s) to "
            f"its end (t = {end['t']} s): gateway {grow('gateway_rss_kb')}, edge {soak['region']} "
            f"{grow('edge_rss_kb')} -> {verdict} (threshold +5 %); cache bounds: edge peak "
            f"{peak_edge:,.0f} of {soak['edge_max_bytes']:,}, gateway tier peak {peak_gw:,.0f} of "
            f"{soak['gateway_max_bytes']:,}. Every sample: `soak` in results.jsonl (LT_KEEP=1).")


def soak_table(recs):
    soak = next((r for r in recs if r["kind"] == "soak"), None)
    if not soak or not soak["samples"]:
        return ""
    smp = soak["samples"]
    step = max(1, len(smp) // 12)
    picked = smp[::step] + ([smp[-1]] if (len(smp) - 1) % step else [])
    rows = ["| t s | gateway RSS MiB | gateway tier bytes | edge RSS MiB | edge cache bytes |",
            "| ---: | ---: | ---: | ---: | ---: |"]
    for x in picked:
        rows.append(f"| {x['t']} | {x['gateway_rss_kb'] / 1024:,.1f} | {x['gateway_cache_bytes']:,.0f} | "
                    f"{x['edge_rss_kb'] / 1024:,.1f} | {x['edge_cache_bytes']:,.0f} |")
    return "\n".join(rows)


def num(x):
    return "gone" if x is None else f"{x:,}"


def fmt_ms(x):
    return "n/a" if x is None else f"{x:,.0f} ms"


SHORT = {"1a": "1a hit by hash", "1b": "1b hit at 0x0", "1c": "1c hit, unique ids", "1d": "1d hot latest",
         "edge": "E edge tier",
         "key": "K tenant key",
         "2-c1": "2 miss c1",
         "2-c32": "2 miss c32", "3": "3 mixed", "4": "4 failover", "5": "5 batch", "fill": "M cache fill"}


def cpu_table(recs):
    rows = ["| workload | target | " + " | ".join(COMPONENTS) + " | total |",
            "| --- | --- |" + " ---: |" * (len(COMPONENTS) + 1)]
    names = dict(TARGETS)
    for r in recs:
        if r["kind"] != "wrk":
            continue
        per, total = cpu_us(r)
        if per is None:
            continue
        cells = ["" if per[c] is None else f"{per[c]:,.1f}" for c in COMPONENTS]
        rows.append(f"| {SHORT.get(r['workload'], r['workload'])} | "
                    f"{names.get(r['target'], r['target'])} | " + " | ".join(cells)
                    + f" | {'' if total is None else f'{total:,.1f}'} |")
    return "\n".join(rows)


def mem_table(recs):
    mems = [r for r in recs if r["kind"] == "mem"]
    if not mems:
        return ""
    regions = []
    for m in mems:
        for reg in m["edges"]:
            if reg not in regions:
                regions.append(reg)
    max_bytes = next((r["edge_cache_max_bytes"] for r in recs if r["kind"] == "info"), None)
    head = ["workload", "gateway RSS MiB"]
    for reg in regions:
        head += [f"edge {reg} RSS MiB", f"edge {reg} cache bytes"]
    rows = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    by_phase = {}
    for m in mems:
        by_phase.setdefault(m["workload"], {})[m["when"]] = m
    titles = {"1": "1 cache hit", "edge": "E edge tier", "idle": "I idle connections", "key": "K tenant key", "2": "2 miss", "3": "3 mixed", "4": "4 failover", "5": "5 batch",
              "fill": "M cache fill", "soak": "S soak"}
    peak = 0
    for phase, d in by_phase.items():
        b, a = d.get("before"), d.get("after")
        if not b or not a:
            continue

        def mib(kb):
            return f"{kb / 1024:,.1f}" if kb else "gone"

        cells = [titles.get(phase, phase), f"{mib(b['gateway_rss_kb'])} → {mib(a['gateway_rss_kb'])}"]
        for reg in regions:
            eb, ea = b["edges"].get(reg, {}), a["edges"].get(reg, {})
            cells.append(f"{mib(eb.get('rss_kb'))} → {mib(ea.get('rss_kb'))}")
            cb, ca = eb.get("cache_bytes"), ea.get("cache_bytes")
            peak = max(peak, cb or 0, ca or 0)
            cells.append(f"{num(cb)} → {num(ca)}")
        rows.append("| " + " | ".join(cells) + " |")
    out = "\n".join(rows)
    if max_bytes:
        out += (f"\n\nEdge cache bound `[cache] max_bytes` = {max_bytes:,} bytes; largest `edge_cache_bytes` "
                f"read = {peak:,} ({'within' if peak <= max_bytes else 'OVER'} the bound).")
    return out


def cmd_table(a):
    recs = load(a.results)
    table, notes = main_table(recs)
    print(table)
    print()
    for n in notes:
        print(f"- {n}")
    it = idle_table(recs)
    if it:
        print()
        print("Idle connections:")
        print()
        print(it)


def cmd_results(a):
    recs = load(a.results)
    info = next((r for r in recs if r["kind"] == "info"), {})
    pool = next((r for r in recs if r["kind"] == "pool"), None)
    table, notes = main_table(recs)
    m = info.get("machine", {})
    print("# Load test results")
    print()
    print("Written by `loadtests/run.sh` (see README.md for what each workload and column means). Ratios")
    print("compare targets measured in the same run on the same machine; absolute numbers are only")
    print("meaningful next to each other. Earlier runs: `git log -p loadtests/RESULTS.md`.")
    print()
    print(f"## Run of {info.get('date', '?')}")
    print()
    print(f"Command: `{a.command}`")
    print()
    print(f"- Machine: {m.get('nproc')} CPUs ({m.get('cpu')}), {m.get('mem')} memory, Linux {m.get('kernel')}; "
          f"load average at start {m.get('loadavg')}")
    print(f"- Code: commit {info.get('commit')}{' with uncommitted changes in ' + info['dirty'] if info.get('dirty') else ''}; "
          f"{info.get('rustc')}; anvil {info.get('anvil')}; {info.get('nginx')}; redis {info.get('redis', '?')}; "
          f"{info.get('wrk')}")
    rounds = (f" (1a, 1b, E and K: {info['rounds']} rounds of {info.get('round_duration')} per target, every target "
              f"in turn per round, medians reported)" if info.get("rounds", 1) > 1 else "")
    print(f"- Settings: wrk -t1, {info.get('duration')} per run{rounds}, each but 4 and M after an unrecorded "
          f"{info.get('warmup')} warm-up; anvil --block-time {info.get('block_time')}; nginx 1 worker, proxy_cache_valid 200 "
          f"{info.get('nginx_ttl')}; gateway and edge nodes worker_threads = {info.get('workers', '?')}, "
          f"anvil TOKIO_WORKER_THREADS = {info.get('anvil_workers', '?')}; "
          f"{info.get('edges')} edge nodes, caller located by X-Forwarded-For "
          f"{info.get('xff')} so {info.get('serving_region')} serves; edge cache max_bytes {info.get('edge_cache_max_bytes'):,}; "
          f"gateway with a tenants file (keyless callers unlimited; tenant `bench` with every limit on, far above the load) sharing its counts "
          f"through its own redis-server; beside it on the same nodes and Redis "
          f"{'gw-demo (no `worker_threads`, no `[cache]`: the shipped defaults, as config/gateway.toml), ' if info.get('demo') else ''}"
          f"gw-edge (both gateway cache tiers off, workload E) and the ceiling, a bare hyper server on one thread "
          f"(gateway/examples/ceiling.rs)")
    if pool:
        p = pool["pool"]
        print(f"- Workload 3 pool: {p['questions']:,} distinct questions over {p['accounts']} accounts and "
              f"{p['blocks']} recent blocks; method shares {p['method_share']}; `latest`-addressed share "
              f"{p['latest_share']}; transfers sent during the runs: {pool.get('txs', '?')}")
    host = host_record(recs)
    if host:
        print(host_line(host))
    if info.get("nginx_errors"):
        print(f"- nginx error log: {info['nginx_errors']} `[error]` lines, the first: `{info.get('nginx_first_error')}`")
    print(f"- Whole run took {info.get('elapsed', '?')}, of which {info.get('build_s', '?')} s building")
    print()
    print(table)
    print()
    for n in notes:
        print(f"- {n}")
    rt = rounds_table(recs)
    if rt:
        print()
        print("Rounds (workloads run in rounds, every target in turn per round; the tables above give each "
              "target's median req/s and latency, and CPU over all rounds; spread = (max - min) / median):")
        print()
        print(rt)
    print()
    print("CPU time per request (µs, user + system from /proc/<pid>/stat over the run, all serving processes;")
    print("idle components show their background work; wrk itself is not counted):")
    print()
    print(cpu_table(recs))
    print()
    it = idle_table(recs)
    if it:
        print("Idle connections (workload I):")
        print()
        print(it)
        print()
    print("Memory (VmRSS before → after each workload; `edge_cache_bytes` from each edge node's /metrics):")
    print()
    print(mem_table(recs))
    st = soak_table(recs)
    if st:
        print()
        print("Memory during the soak run (every answer new and cached: both cache tiers full and evicting):")
        print()
        print(st)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("failover")
    s.add_argument("--events", nargs="+", required=True)
    s.add_argument("--kill-at", type=float, required=True)
    s.add_argument("--region", required=True)
    s = sub.add_parser("table")
    s.add_argument("--results", required=True)
    s = sub.add_parser("results")
    s.add_argument("--results", required=True)
    s.add_argument("--command", required=True)
    a = p.parse_args()
    {"failover": cmd_failover, "table": cmd_table, "results": cmd_results}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
