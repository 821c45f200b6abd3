"""What ``bench --serving`` prints and writes: the lookup table, S3 requests, generate's share, targets, cost."""

from __future__ import annotations

from typing import Any

#: Issue 21's acceptance, checked against a run's figures.
TARGET_USERS = 1_000_000
S3_GB_MONTH, S3_PER_1000_GETS = 0.023, 0.0004  # S3 Standard list prices, us-east-1 (check yours)


def _ms(t: dict[str, float]) -> str:
    return f"{t['p50_ms']:.2f} / {t['p99_ms']:.2f} ({t['cpu_p50_ms']:.2f} / {t['cpu_p99_ms']:.2f})"


def lookup_table(r: dict[str, Any]) -> str:
    lines = ["| users | k x d | dtype | files | row groups | open ms | get 1 user p50 / p99 ms (CPU) | get 32 users p50 / p99 "
             "ms (CPU) | missing user p50 ms | resident MiB | index B/user | footers B/user | store B/user |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in r["rows"] + [r[key] for key in ("real", "real_float16") if key in r]:
        lines.append(f"| {row['users']:,} | {row['k']} x {row['d']} | {row.get('dtype', 'float32')} | {row['files']} | "
                     f"{row['row_groups']:,} | "
                     f"{row['open_ms']:.0f} | {_ms(row['single'])} | {_ms(row['batch'])} | "
                     f"{row['missing']['p50_ms']:.3f} | {row['resident_mb']:.1f} | {row['index_bytes_per_user']:.1f} | "
                     f"{row['footer_bytes_per_user']:.1f} | {row['bytes_per_user']:,.0f} |")
    return "\n".join(lines)


def s3_line(r: dict[str, Any]) -> str:
    s3 = r.get("s3", {})
    if "skipped" in s3 or not s3:
        return f"Requests per lookup on S3: not measured ({s3.get('skipped', 'no S3 row')})."
    return (f"Requests on a local S3 server (moto), {s3['users']:,}-user store: open {s3['open']} (LATEST, manifest, "
            f"the two index files; nothing listed), one-user get {s3['single_max']} (one ranged GET), unknown user "
            f"{s3['missing']}, get of 32 users {s3['batch32']} (one ranged GET per row group, sent concurrently), "
            f"refresh check with LATEST unchanged {s3['refresh_unchanged']}.")


def generate_line(r: dict[str, Any]) -> str:
    g = r.get("generate")
    if not g:
        return ""
    big = _row(r, TARGET_USERS)
    text = (f"`generate` for {g['batch']} users x {g['new_tokens']} new tokens with the bundled model on this CPU: "
            f"{g['generate_s']:.2f} s; its look-up of {g['batch']} users from the {r['real']['users']:,}-user store "
            f"at k=16, d=576: {g['lookup_s'] * 1e3:.1f} ms ({g['lookup_s'] / g['generate_s']:.2%}).")
    if big:
        text += (f" A look-up of {g['batch']} users from the {big['users']:,}-user store takes "
                 f"{big['batch8']['p50_ms']:.1f} ms p50 ({big['batch8']['p50_ms'] / 1e3 / g['generate_s']:.2%} of that "
                 "generate).")
    return text


def _row(r: dict[str, Any], users: int) -> dict[str, Any] | None:
    return next((row for row in r["rows"] if row["users"] == users), None)


def format_table(r: dict[str, Any]) -> str:
    f = r.get("format")
    if not f:
        return ""
    lines = [f"The embedding column's encoding, on {f['users']} real prompts of the bundled model (k={f['k']}, "
             f"d={f['d']}: {f['raw_bytes_per_user']:,} bytes of float32 each), row groups of {f['rows_per_row_group']}:",
             "", "| encoding | file B/user | embedding column B/user | CPU ms to decode a row group |",
             "|---|---|---|---|"]
    for label, row in f["variants"].items():
        lines.append(f"| {label} | {row['bytes_per_user']:,.0f} | {row['embedding_bytes_per_user']:,.0f} | "
                     f"{row['decode_ms']:.2f} |")
    return "\n".join(lines)


def targets(r: dict[str, Any]) -> list[tuple[str, float, float, str, bool]]:
    """(title, measured, bound, format, at_least) of every acceptance point the run's rows cover."""
    rows: list[tuple[str, float, float, str, bool]] = []
    big, small = _row(r, TARGET_USERS), r["rows"][0]
    if big:
        rows += [("1M users: one-user get p99 <= 2 ms (wall)", big["single"]["p99_ms"], 2.0, "{:.2f} ms", False),
                 ("1M users: one-user get p99 <= 2 ms (CPU)", big["single"]["cpu_p99_ms"], 2.0, "{:.2f} ms", False),
                 ("1M users: 32-user get p99 <= 20 ms (wall)", big["batch"]["p99_ms"], 20.0, "{:.1f} ms", False),
                 ("1M users: 32-user get p99 <= 20 ms (CPU)", big["batch"]["cpu_p99_ms"], 20.0, "{:.1f} ms", False),
                 ("1M users: open <= 1 s", big["open_ms"] / 1e3, 1.0, "{:.2f} s", False),
                 (f"one-user get p50 at 1M <= 2x at {small['users']:,} (CPU)",
                  big["single"]["cpu_p50_ms"] / small["single"]["cpu_p50_ms"], 2.0, "{:.2f}x", False),
                 ("1M users: index + footers <= 40 B per user (16-character ids)",
                  big["index_bytes_per_user"] + big["footer_bytes_per_user"], 40.0, "{:.1f} B", False)]
    if r.get("generate") and big:
        rows.append(("generate, 8 users from the 1M store: look-up < 5% of the time",
                     big["batch8"]["p50_ms"] / 1e3 / r["generate"]["generate_s"], 0.05, "{:.2%}", False))
    if "real" in r:
        rows.append(("store <= 35 KB per user at k=16, d=576, float32", r["real"]["bytes_per_user"] / 1e3, 35.0,
                     "{:.1f} KB", False))
    if r.get("s3", {}).get("single_max") is not None:
        rows.append(("S3: one-user get <= 2 requests after open", r["s3"]["single_max"], 2, "{:.0f}", False))
    return rows


def cost_line(r: dict[str, Any], users: int = 10_000_000) -> str:
    """Memory, disk and request bill of a store of ``users`` at the real dims, from this run's per-user figures."""
    big = _row(r, TARGET_USERS) or r["rows"][-1]
    real = r.get("real", big)
    memory = (big["index_bytes_per_user"] + big["footer_bytes_per_user"]) * users / 2**20
    real_memory = (real["index_bytes_per_user"] + real["footer_bytes_per_user"]) * users / 2**20
    disk = real["bytes_per_user"] * users / 1e9
    return (f"Cost for {users:,} users: {disk:,.0f} GB per version at k={real['k']}, d={real['d']} (the job keeps "
            f"2 versions: ${2 * disk * S3_GB_MONTH:,.0f} a month on S3 Standard); a service holds "
            f"{real_memory:,.0f} MiB of index and footers at those dims ({memory:,.0f} MiB at k={big['k']}, "
            f"d={big['d']}, where row groups hold 64 users) and opens it in about "
            f"{big['open_ms'] * users / big['users'] / 1e3:.1f} s (scaled from {big['users']:,} users); a one-user "
            f"lookup is one ranged GET: ${S3_PER_1000_GETS * 1000:.2f} per million lookups (list prices, us-east-1).")


def _load(r: dict[str, Any]) -> str:
    """The machine's 1-minute load average when the run began and ended (older reports lack it)."""
    load = r.get("load_average")
    return f"; 1-minute load average {load[0]:.1f} at the start, {load[-1]:.1f} at the end" if load else ""


def serving_tables(r: dict[str, Any]) -> str:
    """The serving report as markdown."""
    from jobs.bench.report import _met_table

    head = (f"Machine: {r['machine']} ({r['software']}); one thread; warm page cache; latencies are wall time "
            "with the calling thread's CPU time in brackets (on a shared machine the wall tail is the other jobs' "
            f"scheduling){_load(r)}.")
    parts = [head, "", lookup_table(r), "", s3_line(r), generate_line(r), "", format_table(r), "",
             _met_table(targets(r)), "", cost_line(r)]
    return "\n".join(p for i, p in enumerate(parts) if p or (i and parts[i - 1]))
