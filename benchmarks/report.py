"""What a run says: the machine it ran on, its tables and ratios, and the
targets evaluated on its medians."""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import sqlite3
import statistics
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.fixture import PROVIDER_DELAY, ROOT


def log(msg: str = "") -> None:
    print(msg, flush=True)


def source_fingerprint() -> str:
    """A hash of what the servers run (extauth/, handlers/, openapi.yaml, the references)."""
    h = hashlib.sha256()
    files = sorted([*ROOT.glob("extauth/**/*.py"), *ROOT.glob("handlers/*.py"),
                    ROOT / "openapi.yaml", ROOT / "benchmarks" / "reference_app.py",
                    ROOT / "benchmarks" / "bare_app.py"])
    for f in files:
        with contextlib.suppress(OSError):  # removed while hashing
            h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):  # no /proc: the description says less
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    versions: dict[str, str | None] = {}
    for pkg in ("connexion", "starlette", "uvicorn", "sqlite-utils", "httpx", "anyio", "uvloop",
                "httptools", "jsonschema"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT).stdout.strip()
    # The tree that was measured: files changed since that commit, if any.
    dirty = subprocess.run(["git", "status", "--short", "--untracked-files=no"],
                           capture_output=True, text=True, cwd=ROOT).stdout.split("\n")
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "mem_total_mb": mem_kb // 1024,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "packages": versions,
        "wrk": wrk[0] if wrk else "",
        "git_commit": commit,
        "source_fingerprint_start": source_fingerprint(),
        "git_changed_files": [ln.strip() for ln in dirty if ln.strip()],
        "loadavg_start": os.getloadavg(),
    }


# -- output ---------------------------------------------------------------------------------------


def ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.2f}"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def mb(kb: int | None) -> str:
    return "-" if not kb else f"{kb / 1024:.1f}"


def table(rows: list[dict[str, Any]]) -> str:
    width = max([11, *(len(r["name"]) + 1 for r in rows)])
    head = (f"  {'server':<{width}}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}"
            f"{'errors':>8}   {'RSS before -> after MB':<22}")
    lines = [head]
    for r in rows:
        m = r["median"]
        lines.append(
            f"  {r['name']:<{width}}{m['rps']:>9.1f}{ms(m['p50_us']):>9}{ms(m['p99_us']):>9}"
            f"{ms(m['p999_us']):>10}{m['errors']:>8}   "
            f"{mb(r.get('rss_before_kb'))} -> {mb(r.get('rss_after_kb'))}"
        )
    return "\n".join(lines)


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def ratios(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float | None]:
    """Medians ``a`` over medians ``b``: p50, p99 and throughput."""
    return {"p50": ratio(a["p50_us"], b["p50_us"]), "p99": ratio(a["p99_us"], b["p99_us"]),
            "throughput": ratio(a["rps"], b["rps"])}


def ratios_text(r: dict[str, float | None]) -> str:
    return f"p50 {r['p50']:.2f}x, p99 {r['p99']:.2f}x, throughput {r['throughput']:.2f}"


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets of the brief, evaluated on the medians."""
    sc = res["scenarios"]
    out: list[dict[str, Any]] = []

    def add(target: str, met: bool | None, value: str) -> None:
        out.append({"target": target, "met": met, "value": value})

    # The whole stack against the bare reference, SQLite, one worker: the list
    # (with and without links) and a get by id without a link.
    for k in ("1", "12", "2"):
        if k in sc and "ratio_bare" in sc[k]:
            r = sc[k]["ratio_bare"]
            med = {n: sc[k]["servers"][n]["median"] for n in ("extauth", "bare")}
            add(f"scenario {k} throughput >= 0.5 x bare", r["throughput"] >= 0.5,
                f"{r['throughput']:.2f} ({med['extauth']['rps']:.0f} vs "
                f"{med['bare']['rps']:.0f} req/s)")
            add(f"scenario {k} p99 <= 2 x bare", r["p99"] <= 2,
                f"{r['p99']:.2f}x ({ms(med['extauth']['p99_us'])} vs "
                f"{ms(med['bare']['p99_us'])} ms)")
    # The OpenAPI layer alone, against the reference that reuses extauth's domain.
    for k in ("1", "2", "5"):
        if k in sc and "ratio" in sc[k]:
            t = sc[k]["ratio"]["throughput"]
            add(f"scenario {k} throughput >= 0.6 x reference", t >= 0.6, f"{t:.2f}")
    for k in ("1", "2", "3", "4", "5", "6"):
        if k in sc and sc[k]["connections"] == 50 and "ratio" in sc[k]:
            p = sc[k]["ratio"]["p99"]
            add(f"scenario {k} p99 at -c50 <= 3 x reference", p <= 3,
                f"{p:.2f}x ({ms(sc[k]['servers']['extauth']['median']['p99_us'])} vs "
                f"{ms(sc[k]['servers']['reference']['median']['p99_us'])} ms)")
    if "14" in sc:
        r = sc["14"]["two_over_one"]
        add("scenario 14 (PostgreSQL): list throughput of two instances >= 1.6 x one",
            r >= 1.6, f"{r:.2f}; this machine's ceiling {sc['14']['ceiling']:.2f} "
            f"({sc['14']['limit']})")
    if "3c1" in sc:
        # One connection: every request calls the provider (at -c50 concurrent
        # identical validations share one call, and queueing dominates p50).
        # Counted from the provider's own p50 where it was measured (its 20 ms
        # sleep overshoots), else from the nominal 20 ms.
        own = sc["3c1"].get("provider_own", {}).get("median", {}).get("p50_us")
        base = own / 1000 if own else PROVIDER_DELAY * 1000
        servers = sc["3c1"]["servers"]
        p50 = servers["extauth"]["median"]["p50_us"] / 1000
        others = ", ".join(f"{name} +{servers[name]['median']['p50_us'] / 1000 - base:.2f} ms"
                           for name in ("reference", "bare") if name in servers)
        add(f"scenario 3 (-c1) extauth p50 <= 2 ms over the provider's own ({base:.2f} ms)",
            p50 - base <= 2, f"p50 {p50:.2f} ms = +{p50 - base:.2f} ms ({others})")
    if "6" in sc and "vs_10_users" in sc["6"]:
        r = sc["6"]["vs_10_users"]["extauth"]["p50_ratio"]
        add("scenario 6 list p50 within 1.5 x its value on 10 users", r <= 1.5, f"{r:.2f}x")
    if "9" in sc:
        r = sc["9"]["list_over_get"]
        lst, one = (sc["9"]["servers"][n]["median"]["p50_us"] for n in ("list", "get"))
        add("scenario 9 list of 3 validated links p50 within 1.3 x one validated get (-c1)",
            r["p50"] <= 1.3, f"{r['p50']:.2f}x ({ms(lst)} vs {ms(one)} ms)")
    if "8" in sc:
        e = sc["8"]
        after = e["rss_kb"]["after_total"] / 1024
        add(f"RSS after {e['requests_total']:,} requests within 10% of after "
            f"{e['requests_first']:,}, and < 150 MB",
            e["growth"] <= 0.10 and after < 150,
            f"{e['rss_kb']['after_first'] / 1024:.1f} -> {after:.1f} MB ({e['growth']:+.1%})")
    st = res["startup_s"]["extauth"]
    if st:
        add("extauth start-up < 2 s", max(st) < 2,
            f"median {statistics.median(st):.2f} s, max {max(st):.2f} s")
    if "10" in sc and sc["10"].get("vs_get_by_id") is not None:
        r = sc["10"]["vs_get_by_id"]
        add("scenario 10: hand-off throughput >= 0.8 x get by id on the same link", r >= 0.8,
            f"{r:.2f} ({sc['10']['servers']['extauth']['median']['rps']:.0f} vs "
            f"{sc['10']['get_by_id_rps']:.0f} req/s)")
    if "11" in sc:
        e = sc["11"]
        t = e["with_over_without"]["throughput"]
        add(f"scenario 11: list throughput with {e['listeners']} listeners >= 0.8 x without",
            t >= 0.8, f"{t:.2f}")
        add("scenario 11: RSS growth with the listeners < 50 MB", e["rss_growth_mb"] < 50,
            f"+{e['rss_growth_mb']:.1f} MB")
        for key in [k for k in e if k.startswith("link_to_answer_")]:
            a = e[key]
            done = a["answered_with_token"] == a["links"] and a["max_s"] is not None
            add(f"scenario 11: every listener answered within 1 s of its link "
                f"({key.removeprefix('link_to_answer_')})",
                done and a["max_s"] < 1.0,
                f"{a['answered_with_token']}/{a['links']}, max {seconds(a['max_s'])}")
    if "7" in sc:
        r = sc["7"]["with_over_without"]
        # "Unaffected": within the run-to-run noise of this machine, taken as 1.25x.
        worst = sc["7"]["servers"]["extauth, with slow calls"]["median"]["max_us"]
        add("list latency unaffected by slow provider calls in flight "
            "(p50, p99 <= 1.25x; max < 1 s)",
            r["p50"] <= 1.25 and r["p99"] <= 1.25 and worst < 1e6,
            f"p50 {r['p50']:.2f}x, p99 {r['p99']:.2f}x with/without; "
            f"max with {ms(worst)} ms")
    return out
