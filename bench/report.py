"""The benchmark's report: one table row per figure, docs/performance.md and its chart, from a results file.

bench/run.py calls it at the end of a run; `bench/run.py --report FILE` regenerates the document alone.
"""

import contextlib
import os
import platform
import re
from pathlib import Path

NOTES_MARKER = "<!-- Written by hand below this line: bench/run.py keeps it when it regenerates the rest. -->"


def normalize_event(event: str) -> str:
    """One key per kind of error: the first line, numbers (task names, ids) replaced by N."""
    return re.sub(r"\d+", "N", event.splitlines()[0] if event else "?")[:160]


def group_events(by_event: dict[str, int]) -> dict[str, int]:
    grouped: dict[str, int] = {}
    for event, count in by_event.items():
        grouped[normalize_event(event)] = grouped.get(normalize_event(event), 0) + count
    return dict(sorted(grouped.items(), key=lambda item: -item[1]))


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    memory = ""
    with contextlib.suppress(OSError):
        total_kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{total_kb / 1024 / 1024:.1f} GiB"
    return {
        "cpu": model,
        "nproc": os.cpu_count(),
        "memory": memory,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def rows(results: dict) -> list[dict]:
    """One table row per figure: value, reference value, ratio, target, met."""
    table = []

    def add(scenario, figure, chat, reference, unit, target_text, met, higher_is_better=True):
        ratio = None
        if chat is not None and reference:
            ratio = chat / reference if higher_is_better else reference / chat if chat else None
        table.append(
            {
                "scenario": scenario,
                "figure": figure,
                "chat": chat,
                "reference": reference,
                "unit": unit,
                "ratio": ratio,
                "target": target_text,
                "met": met,
            }
        )

    def add_chat(scenario, figure, value, unit, target_text="", met=None):
        """A figure the relay has no counterpart for."""
        add(scenario, figure, value, None, unit, target_text, met)

    def failed(r) -> bool:
        return "error" in r["chat"] or "error" in r["reference"]

    def add_failed(scenario, r):
        which = " and ".join(side for side in ("chat", "reference") if "error" in r[side])
        add(
            scenario,
            f"FAILED ({which}): {(r['chat'].get('error') or r['reference'].get('error'))[:120]}",
            None,
            None,
            "",
            "runs",
            False,
        )

    r = results.get("fanout_closed_loop_100")
    if r:
        scenario = f"fan-out, {r['clients']} clients x {r['messages']} msgs, closed loop (acceptance)"
        if failed(r):
            add_failed(scenario, r)
        else:
            c, ref = r["chat"]["deliveries_per_s"], r["reference"]["deliveries_per_s"]
            add(scenario, "deliveries/s", c, ref, "/s", ">= 25% of reference", c / ref >= 0.25 if ref else None)
            add(
                scenario,
                "send->receive p99",
                r["chat"].get("p99_ms"),
                r["reference"].get("p99_ms"),
                "ms",
                "",
                None,
                higher_is_better=False,
            )
    r = results.get("connect_storm")
    if r:
        scenario = f"connect + disconnect storm, {r['count']} clients, {r['concurrency']} at a time"
        if failed(r):
            add_failed(scenario, r)
        else:
            add(
                scenario,
                "connects/s",
                r["chat"]["connects_per_s"],
                r["reference"]["connects_per_s"],
                "/s",
                "zero errors",
                r["chat"]["errors"] == 0,
            )
    for members, bound in ((10, None), (100, 50), (1000, 300)):
        r = results.get(f"fanout_latency_{members}")
        if not r:
            continue
        scenario = f"fan-out latency, {members} members, {r['rate']:.1f} msgs/s open loop"
        if failed(r):
            add_failed(scenario, r)
            continue
        chat_rate, reference_rate = r["chat"]["deliveries_per_s"], r["reference"]["deliveries_per_s"]
        add(scenario, "deliveries/s (offered load)", chat_rate, reference_rate, "/s", "", None)
        for q in ("p50_ms", "p99_ms"):
            target = f"<= {bound} ms" if bound and q == "p99_ms" else ""
            met = (r["chat"][q] <= bound) if target and r["chat"].get(q) is not None else None
            add(
                scenario,
                f"send->receive {q[:3]}",
                r["chat"].get(q),
                r["reference"].get(q),
                "ms",
                target,
                met,
                higher_is_better=False,
            )
    r = results.get("persisted")
    if r:
        scenario = f"persisted, {r['senders']} senders in {r['rooms']} rooms, closed loop"
        if failed(r):
            add_failed(scenario, r)
        else:
            c = r["chat"]
            add(
                scenario,
                "messages/s",
                c["persisted_per_s"],
                r["reference"]["persisted_per_s"],
                "/s",
                ">= 5,000/s",
                c["persisted_per_s"] >= 5000,
            )
            add(
                "persisted: history count == sent",
                "count",
                c.get("history_count"),
                None,
                "",
                f"== {c['sent']}",
                c.get("history_equals_sent"),
            )
    r = results.get("login")
    if r:
        add("POST /token, sequential", "p50", r["chat"]["p50_ms"], None, "ms", "", None)
    r = results.get("login_load")
    if r:
        scenario = f"{r['logins']} concurrent POST /token while {r['members']} members chat at {r['rate']:.0f} msgs/s"
        c = r["chat"]
        if "error" in c:
            add_chat(scenario, f"FAILED: {c['error'][:120]}", None, "", "runs", False)
        else:
            outlasted = " (the logins outlasted the chat's run)" if c["logins_outlasted_chat"] else ""
            add_chat(scenario, "login p50", c["login_p50_ms"], "ms")
            add_chat(scenario, "chat send->receive p99, without logins", c["chat_without_logins"].get("p99_ms"), "ms")
            add_chat(
                scenario,
                f"chat send->receive p99, during logins{outlasted}",
                c["chat_during_logins"].get("p99_ms"),
                "ms",
            )
    r = results.get("idle_rss")
    if r:
        scenario = f"idle sockets, {r['per_room']} to a room"
        if failed(r):
            add_failed(scenario, r)
        else:
            c, ref = r["chat"], r["reference"]
            for n, sockets in enumerate(c["sockets"]):
                kib, ref_kib = c["kib_per_socket"][n], ref["kib_per_socket"][n]
                add(scenario, f"RSS per socket at {sockets:,}", kib, ref_kib, "KiB", "<= 40 KiB", kib <= 40, False)
            held, wanted = c["connects"] - c["closed_early"], c["sockets"][-1]
            ref_held = ref["connects"] - ref["closed_early"]
            add(scenario, "sockets held by one process", held, ref_held, "", f"== {wanted:,}", held == wanted)
    r = results.get("history")
    if r:
        scenario = f"GET /messages, {r['messages']:,} messages in the room (bulk-inserted)"
        c = r["chat"]
        if "error" in c:
            add_chat(scenario, f"FAILED: {c['error'][:120]}", None, "", "runs", False)
        else:
            requests = c["requests"]
            pages = {
                "newest": "newest page",
                "before": "page before a seq in the middle half",
                "after": "page after a seq",
            }
            for key, label in pages.items():
                p50, p99 = requests[key].get("p50_ms"), requests[key].get("p99_ms")
                add_chat(scenario, f"{label}, p50", p50, "ms")
                add_chat(scenario, f"{label}, p99", p99, "ms", "<= 5 ms", p99 is not None and p99 <= 5)
            mixed, clients, small = requests["concurrent"], r["clients"], c["small_room_messages"]
            add_chat(scenario, f"the three mixed, {clients} clients at once, p99", mixed.get("p99_ms"), "ms")
            add_chat(scenario, f"the three mixed, {clients} clients at once", mixed.get("requests_per_s"), "/s")
            small_p99 = requests["newest_small_room"].get("p99_ms")
            add_chat(scenario, f"for comparison: newest page of a room of {small:,}, p99", small_p99, "ms")
    losses = sum(
        (v.get(side, {}).get("lost") or 0) + (v.get(side, {}).get("duplicates") or 0)
        for v in results.values()
        if isinstance(v, dict)
        for side in ("chat", "reference")
        if isinstance(v.get(side), dict)
    )
    add("every scenario", "lost + duplicated deliveries", losses, None, "", "0", losses == 0)
    log = results.get("server_log")
    if log:
        add("chat server log, whole run", "ERROR lines", log["error_lines"], None, "", "", None)
    return table


def fmt(value, unit="") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if unit in ("ms", "KiB"):
        return f"{value:,.1f} {unit}"
    if isinstance(value, float):
        return f"{value:,.0f}"
    return f"{value:,}"


def runs(report: dict) -> list[dict]:
    """The report's runs, one per configuration (a results file from before there were several: one)."""
    if "runs" in report:
        return report["runs"]
    return [
        {"config": "embedded", "label": "SQLite + in-process layer", "server": "daphne", "results": report["results"]}
    ]


def table(report: dict) -> list[dict]:
    """Every run's rows, each naming its configuration."""
    return [{**row, "config": run["label"]} for run in runs(report) for row in rows(run["results"])]


def write_chart(table: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    bars = [row for row in table if row["unit"] == "/s" and row["chat"] and row["reference"]]
    bars = [row for row in bars if "open loop" not in row["scenario"]]  # open loop: the offered load, not a limit
    several = len({row["config"] for row in table}) > 1
    fig, ax = plt.subplots(figsize=(9 if not several else 12, 4))
    labels = [
        (f"{row['config']}\n" if several else "") + row["scenario"].split(",")[0] + "\n" + row["figure"] for row in bars
    ]
    configs = list(dict.fromkeys(row["config"] for row in table))
    ax.bar(labels, [row["ratio"] * 100 for row in bars], color=[f"C{configs.index(row['config'])}" for row in bars])
    ax.axhline(25, color="red", linestyle="--", label="acceptance target (25%)")
    ax.set_ylabel("chat server, % of the bare relay")
    ax.tick_params(axis="x", labelsize=7 if several else 10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def describe(run: dict) -> str:
    server = {
        "daphne": "one `python -m chatproject.serve` (daphne) process",
        "uvicorn": "one `python -m chatproject.serve_uvicorn` (uvicorn, websockets-sansio, no deflate) process",
    }[run["server"]]
    if run["config"] == "embedded":
        backing = "SQLite (WAL) and the in-process channel layer"
    else:
        versions = run.get("versions") or {}
        backing = (
            f"PostgreSQL {versions.get('postgresql', '?')} (a database of the run's own, psycopg pool of the default "
            f"size) and Redis {versions.get('redis', '?')} (pub/sub channel layer, presence, cache)"
        )
    return (
        f"**{run['label']}**: {server}"
        + (f" {run['server_version']}" if run.get("server_version") else "")
        + (f", {backing}, rate limits off, LOG_LEVEL=WARNING.")
    )


def write_doc(report: dict, table: list[dict], chart: bool, path: Path) -> None:
    m = report["machine"]
    lines = [
        "# Performance",
        "",
        "Generated by `bench/run.py` (`make bench`) down to the hand-written notes at the end.",
        f"Run {report['started']} ({'smoke: figures meaningless' if report['smoke'] else 'full run'}),"
        f" raw results in `bench/results/{report['file']}`.",
        "",
        f"Machine: {m['cpu']}, {m['nproc']} CPUs (nproc), {m['memory']} RAM, Linux {m['kernel']}, "
        f"Python {m['python']}. Reference: `bench/reference.py`, a bare `websockets` relay (no auth, no DB), "
        "started afresh beside each configuration. Clients: `websockets`, permessage-deflate off, in child "
        "processes on the same machine (they share its cores with the server). Ratios compare the two servers "
        "within the same configuration of this run. Chat server configurations:",
        "",
    ]
    lines += [f"- {describe(run)}" for run in runs(report)]
    lines += [
        "",
        "| Config | Scenario | Figure | Chat server | Reference | Ratio | Target | Met? |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in table:
        ratio = f"{row['ratio'] * 100:.1f}%" if row["ratio"] is not None else "—"
        met = {True: "yes", False: "**no**", None: "—"}[row["met"]]
        lines.append(
            f"| {row['config']} | {row['scenario']} | {row['figure']} | {fmt(row['chat'], row['unit'])} | "
            f"{fmt(row['reference'], row['unit'])} | {ratio} | {row['target'] or '—'} | {met} |"
        )
    lines += [
        "",
        "For latency and memory rows the ratio is reference ÷ chat (higher is better, as for throughput).",
        "",
    ]
    if chart:
        lines += ["![Chat server throughput as a share of the bare relay](performance.png)", ""]
    else:
        lines += ["(No chart: matplotlib is not installed in this environment.)", ""]
    lines += ["## Targets", ""]
    for row in table:
        if row["met"] is None:
            continue
        verdict = "met" if row["met"] else "NOT met"
        detail = ""
        if row["met"] is False and row["ratio"] is not None and "25%" in row["target"]:
            detail = f": {row['ratio'] * 100:.1f}% of the reference, {25 / (row['ratio'] * 100):.1f}x short"
        elif row["met"] is False and row["unit"] in ("ms", "KiB") and row["chat"]:
            bound = float(row["target"].split()[1])
            detail = f": {row['chat']:.1f} {row['unit']}, {row['chat'] / bound:.1f}x the bound"
        elif row["met"] is False and "5,000" in row["target"] and row["unit"] == "/s" and row["chat"]:
            detail = f": {row['chat']:,.0f}/s, {5000 / row['chat']:.1f}x short"
        lines.append(f"- {row['config']}: {row['scenario']} — {row['figure']} {row['target']}: **{verdict}**{detail}.")
    for run in runs(report):
        log = run["results"].get("server_log") or {}
        if log.get("error_lines"):
            lines += ["", f"ERROR lines the chat server logged during the run ({run['label']}):", ""]
            lines += [f"- {count:,} x `{event}`" for event, count in group_events(log["by_event"]).items()]
    if report["not_implemented"]:
        lines += ["", "## Not measured", ""]
        lines += [f"- {item}" for item in report["not_implemented"]]
    lines += [
        "",
        "## Method notes",
        "",
        "- Users and their access tokens are made in bulk with `manage.py shell -c` (one shared password hash): "
        "a `/token` login costs a full PBKDF2 hash, and a room of 1,000 would take minutes to log in. The "
        "WebSocket connect still verifies the JWT, loads the user and joins presence (connects/s includes auth).",
        "- Closed loop: each client sends its next message when its own previous one comes back. Open loop: "
        "messages at a fixed rate, round-robin over the room's members, each carrying its send time; every "
        "receiver records send→receive for every message. A client process reports ready only once no frame "
        "has reached its sockets for 0.3 s: in a chat room each socket first receives a join event for every "
        "member that connected after it (about 500,000 in a room of 1,000), which must not be parsed on the "
        "clock of the first messages.",
        "- Loss and duplicates: every receiver must see seq 1..N of its fresh room exactly once (relay: every "
        "client_id once); any miss or repeat fails the run.",
        "- Persisted: after the run every room's history is read back with `GET /messages?after=` and must be "
        "seq 1..N with N equal to what was sent to it.",
        "- Logins under chat load: the room chats in open loop; after a quiet stretch the logins start together, "
        "each a `POST /token` with the real password on its own connection. The chat's p99 is split by send time: "
        "messages sent before the first login started, and those sent while any was running.",
        "- Idle sockets: on server processes started afresh (same database), so that memory earlier scenarios "
        "freed is not reused by the sockets. VmRSS of the server process (/proc) after a warm-up of 50 sockets, "
        "then after 1,000 and after 5,000 sockets are open (10 to a room, distinct users in a room, over 4 client "
        "processes) and the server has gone idle; KiB per socket = growth ÷ sockets open. A socket the server "
        "closed while idle, or one that failed to open, fails the run.",
        "- History: messages inserted with one `INSERT ... SELECT` over a generated series (seq 1..N, the room's "
        "`last_seq` = N), then `ANALYZE`. Each request on one keep-alive connection with a Bearer token, timed "
        "from request to the last byte of the answer; every answer must be 50 messages starting at the expected "
        "seq. Sequential requests, then the three kinds mixed from several client threads at once.",
        "",
    ]
    kept = ""
    with contextlib.suppress(OSError):
        existing = path.read_text()
        if NOTES_MARKER in existing:
            kept = existing[existing.index(NOTES_MARKER) :]
    path.write_text("\n".join(lines) + "\n" + (kept or NOTES_MARKER + "\n"))
