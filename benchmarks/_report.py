"""Turns measured sections into the printed tables, the SPEC §5 verdicts, Markdown and JSON."""

import importlib.metadata
import multiprocessing
import platform
import subprocess
from datetime import datetime, timezone
from typing import Any

from _common import BENCH_DIR, REDIS_DB, REDIS_HOST, REDIS_PORT
from _harness import Case, Section, Settings


def us(ns: float | None) -> str:
    if ns is None:
        return "n/a"
    value = ns / 1000
    return f"{value:,.2f}" if value < 100 else f"{value:,.1f}"


def ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def section_rows(section: Section) -> tuple[list[str], list[list[str]]]:
    headers = ["case", "median µs", "p99 µs", f"vs {section.base_label}" if section.base else ""]
    headers.append("vs peer")
    if section.throughput:
        headers.append("calls/s")
    if section.key == "get_many":
        headers.append("Redis commands")
    headers.append("notes")
    base = section.find(section.base)
    rows = []
    for case in section.cases:
        label = case.label + ("  [base]" if case.key == section.base else "")
        peer = section.find(case.peer)
        peer_text = ""
        peer_ratio = case.ratio_to(peer)
        if peer is not None and peer_ratio is not None:
            peer_text = f"{peer_ratio:.2f}x {_short(peer.label)}"
        elif peer is not None and case.median_ns is not None:
            peer_text = f"n/a ({_short(peer.label)} failed)"
        row = [
            label,
            us(case.median_ns),
            us(case.p99_ns),
            ratio(case.ratio_to(base)) if section.base else "",
            peer_text,
        ]
        if section.throughput:
            row.append(
                f"{case.ops / (case.median_ns / 1e9):,.0f}" if case.median_ns is not None else ""
            )
        if section.key == "get_many":
            row.append(str(case.extra.get("redis_commands", "")))
        notes = list(case.notes)
        if case.error:
            notes.insert(0, f"n/a: {case.error}")
        row.append("; ".join(notes))
        rows.append(row)
    if not section.base:
        headers.pop(3)
        for row in rows:
            row.pop(3)
    return headers, rows


def _short(label: str) -> str:
    return label.split(" ", 1)[0]


def stampede_rows(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    headers = [
        "case",
        "fetches",
        "Redis commands",
        "INFO delta",
        "wall ms",
        "caller errors",
        "backend errors",
        "notes",
    ]
    table = []
    for row in rows:
        if "error" in row:
            table.append([row["case"], "n/a", "", "", "", "", "", f"n/a: {row['error']}"])
            continue
        backend_errors = row.get("backend_errors")
        commands = ", ".join(f"{k} {v}" for k, v in sorted(row["by_command"].items()))
        table.append(
            [
                row["case"],
                str(row["fetches"]),
                f"{row['commands']} ({commands})",
                str(row["server_commands"]),
                f"{row['wall_ms']:.0f}",
                str(row["errors"]),
                "" if backend_errors is None else str(backend_errors),
                row.get("note", ""),
            ]
        )
    return headers, table


def text_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    numeric = [i not in (0, len(headers) - 1) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            out.append(cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    align = ["---" if i in (0, len(headers) - 1) else "---:" for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(headers), line(align), *(line(r) for r in rows)])


def targets(
    sections: dict[str, Section],
    stampede: list[dict[str, Any]],
    overhead: dict[str, Any] | None,
    *,
    breaker: str,
) -> list[dict[str, str]]:
    def case(section: str, key: str) -> Case | None:
        found = sections.get(section)
        return found.find(key) if found else None

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("PASS" if ok else "FAIL")

    out = []

    base, hit = (
        case("redis_hit_doc", "redis.doc.bare_orjson"),
        case("redis_hit_doc", "redis.doc.cachetier"),
    )
    value = hit.ratio_to(base) if hit else None
    spread = hit.ratio_spread(base) if hit else None
    model = case("redis_hit_doc", "redis.doc.cachetier_pydantic")
    model_ratio = model.ratio_to(base) if model else None
    extra = f" (IQR {spread[0]:.2f}-{spread[1]:.2f})" if spread else ""
    extra += f"; pydantic Profile: {model_ratio:.2f}x" if model_ratio else ""
    out.append(
        {
            "target": "Decorated hit on Redis ≤ 1.05x bare GET + JSON decode (1 KB)",
            "measured": (f"{value:.2f}x (dict[str, Any]){extra}" if value else "n/a"),
            "verdict": verdict(value <= 1.05 if value else None),
        }
    )

    mem, aio = (
        case("memory_hit_doc", "memory.doc.cachetier"),
        case("memory_hit_doc", "memory.doc.aiocache"),
    )
    value = mem.ratio_to(aio) if mem else None
    spread = mem.ratio_spread(aio) if mem else None
    out.append(
        {
            "target": "Memory-backend decorated hit ≤ 0.3x aiocache memory hit (1 KB)",
            "measured": (
                f"{value:.2f}x ({us(mem.median_ns)} µs vs {us(aio.median_ns)} µs"
                + (f"; IQR {spread[0]:.2f}-{spread[1]:.2f})" if spread else ")")
                if value and mem and aio
                else "n/a"
            ),
            "verdict": verdict(value <= 0.3 if value else None),
        }
    )
    lru = case("memory_hit_doc", "memory.doc.async_lru")
    tier = case("memory_hit_doc", "memory.doc.tiered")
    tier_ratio = tier.ratio_to(lru) if tier and lru else None
    out.append(
        {
            "target": "Two-tier local hit within 1.5x async_lru hit",
            "measured": (
                f"{tier_ratio:.2f}x ({us(tier.median_ns)} µs vs {us(lru.median_ns)} µs)"
                if tier_ratio and tier and lru
                else "n/a"
            ),
            "verdict": verdict(tier_ratio <= 1.5 if tier_ratio else None),
        }
    )

    conc = case("concurrent_hits", "concurrent.cachetier")
    rate = conc.ops / (conc.median_ns / 1e9) if conc and conc.median_ns else None
    pipe = case("concurrent_hits", "concurrent.pipeline")
    pipe_rate = pipe.ops / (pipe.median_ns / 1e9) if pipe and pipe.median_ns else None
    scaled = ""
    if rate and pipe_rate:
        # SPEC's machine: one 100-GET pipeline about 95,000/s; the target is 90,000/s.
        scaled = (
            f"; the raw pipeline does {pipe_rate:,.0f}/s here (SPEC machine: ~95,000/s), so "
            f"the target scaled to this machine is ~{pipe_rate * 90 / 95:,.0f}/s"
        )
    out.append(
        {
            "target": "100 concurrent hits of one key ≥ 90,000 calls/s",
            "measured": f"{rate:,.0f} calls/s{scaled}" if rate else "n/a",
            "verdict": verdict(rate >= 90_000 if rate else None),
        }
    )

    one = next((r for r in stampede if r["case"] == "cachetier @cached (default)"), None)
    fetches = one.get("fetches") if one else None
    out.append(
        {
            "target": "1,000 concurrent misses of one key → 1 fetch in one process",
            "measured": (
                f"{fetches} fetch(es), {one['commands']} Redis commands"
                if one and fetches is not None
                else "n/a"
            ),
            "verdict": verdict(fetches == 1 if fetches is not None else None),
        }
    )
    multi = next((r for r in stampede if r["library"] == "cachetier" and r["processes"] > 1), None)
    fetches = multi.get("fetches") if multi else None
    out.append(
        {
            "target": (
                "… across 4 processes with lock=True → 1 fetch, ≤ a few dozen commands waiting"
            ),
            "measured": (
                f"{fetches} fetch(es), {multi['commands']} Redis commands"
                if multi and fetches is not None
                else "n/a"
            ),
            "verdict": verdict(fetches == 1 if fetches is not None else None),
        }
    )

    bare, down = case("redis_down", "down.bare"), case("redis_down", "down.cachetier")
    delta = (
        down.median_ns - bare.median_ns
        if down and bare and down.median_ns and bare.median_ns
        else None
    )
    out.append(
        {
            "target": "Redis down, breaker open: bare function + ≤ 5 µs",
            "measured": (
                f"+{delta / 1000:,.1f} µs per call ({breaker})" if delta is not None else "n/a"
            ),
            "verdict": verdict(delta <= 5000 if delta is not None else None),
        }
    )

    many = case("get_many", "many.cachetier")
    commands = many.extra.get("redis_commands") if many else None
    out.append(
        {
            "target": "Reading N keys costs one round trip, not N",
            "measured": f"get_many(100) sent {commands} command(s)" if commands else "n/a",
            "verdict": verdict(commands == 1 if commands else None),
        }
    )

    if overhead and "with_ttl" in overhead:
        worst = max(overhead["with_ttl"], overhead["without_ttl"])
        out.append(
            {
                "target": "Small memory-backend entry ≤ 200 bytes beyond key and value",
                "measured": (
                    f"{overhead['with_ttl']} B with a TTL, {overhead['without_ttl']} B without "
                    "(tracemalloc, key and value objects excluded)"
                ),
                "verdict": verdict(worst <= 200),
            }
        )
    return out


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def _source_state() -> str:
    """Returns the commit the run measured, noting uncommitted changes under ``src/``."""
    root = BENCH_DIR.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} + {len(changed)} uncommitted file(s) under src/" if changed else head


def environment(settings: Settings, quick: bool) -> dict[str, Any]:
    dists = ("redis", "hiredis", "orjson", "pydantic", "aiocache", "cashews", "async-lru")
    versions = {dist: _version(dist) for dist in dists}
    try:
        from cachetier import __version__ as cachetier_version
    except Exception:
        cachetier_version = "unknown"
    versions["cachetier"] = cachetier_version
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": _source_state(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "cpus": multiprocessing.cpu_count(),
        "event_loop": "asyncio default",
        "redis": f"{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}",
        "versions": versions,
        "quick": quick,
        "settings": settings.__dict__,
    }


def render(report: dict[str, Any], env: dict[str, Any], *, markdown: bool) -> str:
    table = markdown_table if markdown else text_table
    versions = env["versions"]
    head = (
        f"cachetier {versions['cachetier']} ({env['source']}) benchmarks, {env['date']}: "
        f"Python {env['python']}, "
        f"{env['cpus']} CPUs, {report['loop']} (asyncio default), {report['server']} at "
        f"{env['redis']}, redis-py {versions['redis']} + hiredis {versions['hiredis']}, "
        f"orjson {versions['orjson']}, pydantic {versions['pydantic']}; peers: aiocache "
        f"{versions['aiocache']}, cashews {versions['cashews']}, async-lru {versions['async-lru']}."
    )
    settings = env["settings"]
    method = (
        f"{settings['rounds']} rounds of ~{settings['round_seconds'] * 1000:.0f} ms per case "
        f"after warm-up, each cut into {settings['slices']} batches alternating between the "
        f"cases in random order; median of per-round means; ratios are medians of same-round ratios; p99 of "
        f"individually timed calls"
        f"{' (--quick)' if env['quick'] else ''}."
    )
    load = report["load_average"]
    if load["before"] is not None:
        method += f" 1-minute load average: {load['before']} before, {load['after']} after."
    parts = [f"# cachetier benchmarks\n\n{head}\n\n{method}" if markdown else f"{head}\n{method}"]
    for index, section in enumerate(report["sections"], 1):
        headers, rows = section_rows(section)
        title = f"{index}. {section.title}"
        body = table(headers, rows)
        note = f"\n{section.note}" if section.note else ""
        parts.append(f"## {title}\n\n{body}\n{note}" if markdown else f"{title}\n{body}{note}")
    headers, rows = stampede_rows(report["stampede"])
    title = (
        f"{len(report['sections']) + 1}. 1,000 concurrent misses of one key "
        f"(fetch sleeps {report['stampede_fetch_ms']:.0f} ms)"
    )
    note = (
        "Redis commands: counted in each process at redis-py's command packer (handshakes "
        "included); INFO delta: the server's total_commands_processed change, which also "
        "counts any other client of the server."
    )
    body = table(headers, rows)
    parts.append(f"## {title}\n\n{body}\n\n{note}" if markdown else f"{title}\n{body}\n{note}")
    rows = [[t["target"], t["measured"], t["verdict"]] for t in report["targets"]]
    body = table(["SPEC §5 target", "measured", "verdict"], rows)
    parts.append(f"## SPEC §5 targets\n\n{body}" if markdown else f"SPEC §5 targets\n{body}")
    return "\n\n".join(parts) + "\n"


def to_json(report: dict[str, Any], env: dict[str, Any]) -> dict[str, Any]:
    sections = []
    for section in report["sections"]:
        base = section.find(section.base)
        rows = []
        for case in section.cases:
            peer = section.find(case.peer)
            row: dict[str, Any] = {
                "key": case.key,
                "case": case.label,
                "median_us": None if case.median_ns is None else round(case.median_ns / 1000, 3),
                "p99_us": None if case.p99_ns is None else round(case.p99_ns / 1000, 3),
                "calls_per_invocation": case.ops,
            }
            base_ratio = case.ratio_to(base)
            if base_ratio is not None:
                row["ratio_vs_base"] = round(base_ratio, 3)
                spread = case.ratio_spread(base)
                if spread:
                    row["ratio_vs_base_iqr"] = [round(spread[0], 3), round(spread[1], 3)]
            if peer is not None:
                row["peer"] = peer.key
                peer_ratio = case.ratio_to(peer)
                if peer_ratio is not None:
                    row["ratio_vs_peer"] = round(peer_ratio, 3)
            if section.throughput and case.median_ns:
                row["calls_per_second"] = round(case.ops / (case.median_ns / 1e9))
            if case.error:
                row["error"] = case.error
            if case.notes:
                row["notes"] = case.notes
            row.update(case.extra)
            rows.append(row)
        sections.append(
            {
                "key": section.key,
                "title": section.title,
                "base": section.base,
                "note": section.note,
                "rows": rows,
            }
        )
    return {
        "environment": {
            **env,
            "server": report["server"],
            "loop": report["loop"],
            "load_average": report["load_average"],
        },
        "sections": sections,
        "stampede": report["stampede"],
        "memory_entry_overhead_bytes": report["overhead"],
        "targets": report["targets"],
    }
