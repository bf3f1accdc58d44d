#!/usr/bin/env python3
"""Renders BENCHMARKS.md from the results of scripts/bench: criterion's
target/criterion/**/new/estimates.json, and the JSON that the custom
benchmarks write (target/criterion/*/*.json, target/pipeline/*.json,
target/peer/*.json). Prints markdown to stdout. Not edited by hand."""
import datetime
import json
import os
import platform
import subprocess
import sys

T = "target/criterion"


def est(group, name):
    """Median time in ns and elements per iteration (throughput), or None."""
    p = os.path.join(T, group, name, "new", "estimates.json")
    if not os.path.exists(p):
        return None
    e = json.load(open(p))
    b = json.load(open(os.path.join(T, group, name, "new", "benchmark.json")))
    elems = None
    tp = b.get("throughput") or {}
    if "Elements" in tp:
        elems = tp["Elements"]
    return {"ns": e["median"]["point_estimate"], "elems": elems}


def load(p):
    return json.load(open(p)) if os.path.exists(p) else None


def fmt_time(ns):
    if ns is None:
        return "n/a"
    for unit, div in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= div:
            return f"{ns / div:.3g} {unit}"
    return f"{ns:.3g} ns"


def rate(r):
    if not r or not r["elems"]:
        return None
    return r["elems"] / (r["ns"] / 1e9)


def fmt_rate(x):
    return "n/a" if x is None else f"{x:,.0f}/s"


def verdict(ok):
    return "n/a" if ok is None else ("**met**" if ok else "**missed**")


def machine():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(open("/proc/meminfo").readline().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return f"{cpu}, {os.cpu_count()} cores, {mem}; {platform.system()} {platform.release()}; {rustc}; commit {commit}"


def main():
    scale = sys.argv[1] if len(sys.argv) > 1 else "full"
    out = []
    w = out.append
    w("# Benchmarks")
    w("")
    w("Produced by `scripts/bench` (not edited by hand) on "
      f"{datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, scale `{scale}`.")
    w("")
    w(f"Machine: {machine()}.")
    w("")
    note = os.environ.get("EVIDENT_BENCH_NOTE")
    if note:
        w(f"Conditions: {note}")
        w("")
    w("Every figure stands next to a baseline measured in the same run, so the ratio stays meaningful on a noisy "
      "machine. Times are criterion medians unless stated.")
    w("")

    # Verification core.
    w("## Verification core (`cargo bench -p evident-verify --bench core`)")
    w("")
    w("| benchmark | figure | same-run baseline | ratio | target | |")
    w("| --- | --- | --- | --- | --- | --- |")
    sha = est("baseline", "sha256_64B_x1M")
    cr = est("merkle", "compact_range_root_1M")
    if cr and sha:
        w(f"| root of 1M leaf hashes via compact range | {fmt_time(cr['ns'])} | 1M SHA-256 of 64 B: {fmt_time(sha['ns'])} "
          f"| {cr['ns'] / sha['ns']:.2f}× | well under 1 s | {verdict(cr['ns'] < 1e9)} |")
    for name, label in (("verify_inclusion_10M", "verify an inclusion proof at 10M"),
                        ("verify_consistency_10M", "verify a consistency proof at 10M")):
        r = est("merkle", name)
        if r and sha:
            per_hash = sha["ns"] / 1e6
            w(f"| {label} | {fmt_time(r['ns'])} | one SHA-256 of 64 B: {fmt_time(per_hash)} | {r['ns'] / per_hash:.0f}× | | |")
    for name, label in (("open_signed_checkpoint", "open (verify) a signed checkpoint"),
                        ("sign_checkpoint", "sign a checkpoint")):
        r = est("checkpoint", name)
        if r:
            w(f"| {label} | {fmt_time(r['ns'])} | | | | |")
    one, strict = est("signatures", "evident_single"), est("signatures", "dalek_verify_strict_single")
    if one and strict:
        w(f"| verify one producer signature (`sig::verify`, ZIP-215 cofactored, strict encodings) | {fmt_time(one['ns'])} "
          f"| ed25519-dalek `verify_strict`: {fmt_time(strict['ns'])} | {one['ns'] / strict['ns']:.2f}× | | |")
    for n in (5, 64):
        ours, theirs = est("signatures", f"evident_batch_{n}"), est("signatures", f"dalek_verify_batch_{n}")
        if ours and theirs:
            w(f"| verify a batch of {n} producer signatures (`sig::verify_many`), per signature | {fmt_time(ours['ns'] / n)} "
              f"| ed25519-dalek `verify_batch`: {fmt_time(theirs['ns'] / n)} | {ours['ns'] / theirs['ns']:.2f}× | | |")
    w("")

    # Ledger.
    w("## Ledger (`cargo bench -p evident-ledger --bench append`)")
    w("")
    w("| benchmark | figure | same-run baseline | ratio | target | |")
    w("| --- | --- | --- | --- | --- | --- |")
    raw = est("ledger_append", "raw_sqlite_insert_batch")
    for name, label, target in (("batched_unsigned", "batched append, ~500 B records (unsigned)", 200_000),
                                ("batched_signed", "batched append, ~500 B signed records", 80_000)):
        r = est("ledger_append", name)
        if r and raw:
            ratio = rate(r) / rate(raw)
            ok = rate(r) >= target and (name != "batched_unsigned" or ratio >= 0.4)
            extra = " and ≥ 40% of raw" if name == "batched_unsigned" else ""
            w(f"| {label} | {fmt_rate(rate(r))} | raw SQLite INSERT, one transaction: {fmt_rate(rate(raw))} "
              f"| {ratio:.0%} | ≥ {target:,}/s{extra} | {verdict(ok)} |")
    vb = est("ledger_append", "ed25519_verify_batch")
    sg = est("ledger_append", "batched_signed")
    if vb:
        w(f"| ed25519 `verify_batch`, same signatures, 2 threads | {fmt_rate(rate(vb))} | (baseline for signed append) "
          f"| {'' if not sg else '%.0f%% of it' % (100 * rate(sg) / rate(vb))} | | |")
    auto = est("ledger_concurrent", "raw_sqlite_autocommit_fsync")
    for name, file, label in (("unsigned_16_threads", "latency_unsigned.json", "unsigned records (issue 3)"),
                              ("signed_16_threads", "latency.json", "signed records (issue 4)")):
        lat = load(os.path.join(T, "ledger_concurrent", file))
        crit = rate(est("ledger_concurrent", name))
        if not lat:
            continue
        # Throughput: criterion's median over its samples (each a fresh
        # ledger) when present, else the single latency run's.
        tput = crit or lat["throughput_per_s"]
        base = f"raw SQLite autocommit + fsync: {fmt_rate(rate(auto))}" if auto else ""
        ratio = f"{tput / rate(auto):.1f}×" if auto and rate(auto) else ""
        ok = tput >= 20_000 and lat["p99_us"] <= 10_000
        how = "median of criterion's samples" if crit else "one run"
        w(f"| {lat.get('threads', 16)} threads, each waiting for its durable receipt, {label} | "
          f"{tput:,.0f}/s ({how}; the latency run: {lat['throughput_per_s']:,.0f}/s), "
          f"p50 {lat['p50_us'] / 1000:.2f} ms, p99 {lat['p99_us'] / 1000:.2f} ms "
          f"| {base} | {ratio} | ≥ 20,000/s, p99 ≤ 10 ms | {verdict(ok)} |")
    pr = None
    for n in ("prove_inclusion_10M", "prove_inclusion"):
        pr = pr or est("ledger_proof", n)
    st = load(os.path.join(T, "ledger_proof", "storage.json"))
    sha2 = est("ledger_proof", "sha256_64B")
    if pr:
        entries = st["entries"] if st else "?"
        w(f"| inclusion proof from SQLite at {entries:,} entries | {fmt_time(pr['ns'])} median "
          f"| {'SHA-256 of 64 B: ' + fmt_time(sha2['ns']) if sha2 else ''} | {'' if not sha2 else '%.0f×' % (pr['ns'] / sha2['ns'])} "
          f"| ≤ 50 µs | {verdict(pr['ns'] <= 50_000)} |")
    ba = load(os.path.join(T, "ledger_proof", "big_append.json"))
    if ba:
        big, fresh = ba["big"], ba["fresh"]
        w(f"| batched append of {ba['batch']:,} ~500 B records into a ledger of {ba['entries']:,} entries "
          f"(median of 3 batches; bytes written over all 3, the final WAL checkpoint included) "
          f"| {fmt_rate(big['per_s'])}, {big['written_per_record']:,.0f} B written per record "
          f"| the same into a fresh ledger: {fmt_rate(fresh['per_s'])}, {fresh['written_per_record']:,.0f} B written per record "
          f"| {big['per_s'] / fresh['per_s']:.0%} | | |")
    if st:
        w(f"| storage overhead beyond leaf bytes | {st['overhead_per_entry']:.1f} B/entry | leaf bytes "
          f"{st['leaf_bytes'] / st['entries']:.0f} B/entry | | ≤ 100 B | {verdict(st['overhead_per_entry'] <= 100)} |")
    if st and st.get("build"):
        b = st["build"]
        w(f"| building the {b['entries']:,}-entry ledger (batches of 50,000 minimal records, `synchronous = normal`) "
          f"| {b['entries'] / b['secs']:,.0f}/s, {b['written_per_entry']:,.0f} B written per entry, every idempotency-index merge included "
          f"| leaf bytes {st['leaf_bytes'] / st['entries']:.0f} B/entry | | | |")
    ig = load(os.path.join(T, "index_growth", "index_growth.json"))
    if ig:
        ws = ig["windows"]
        first, last = ws[0], ws[-1]
        peak = max(ws, key=lambda x: x["written_per_record"])
        l1, l2 = ig["level_capacity"]
        growth = last["written_per_record"] / first["written_per_record"]
        w(f"| bytes written per record while a ledger grows to {ig['entries']:,} entries (`cargo bench -p evident-ledger --bench index_growth`; "
          f"batches of {ig['batch']:,} minimal records, `synchronous = normal`, each window checkpointed; the index scaled 64× down: "
          f"`merge_min` {ig['merge_min']:,}, merges capped at {ig['merge_cap']:,} rows, level 1 at {l1:,}, level 2 at {l2:,}) "
          f"| last window ({last['from']:,}–{last['to']:,}): {last['written_per_record']:,.0f} B/record; "
          f"largest window ({peak['from']:,}–{peak['to']:,}): {peak['written_per_record']:,.0f} B "
          f"| first window (0–{first['to']:,}): {first['written_per_record']:,.0f} B/record "
          f"| {growth:.2f}× | does not grow with the ledger (≤ 1.5× the first window) | {verdict(growth <= 1.5)} |")
    w("")

    # Pipeline.
    pl = load("target/pipeline/results.json")
    if pl:
        w("## Nightly pack and regulator verification (`cargo bench -p evident-examples --bench pipeline`)")
        w("")
        w(f"A day of {pl['entries']:,} signed records of ~{pl['avg_leaf_bytes']:.0f} bytes. Wall time and peak RSS "
          "from `/usr/bin/time -v` around the release binaries.")
        w("")
        w("| step | wall time | peak RSS | same-run baseline | ratio | target | |")
        w("| --- | --- | --- | --- | --- | --- | --- |")
        b = pl["baselines"]
        build = pl["build"]
        base = b["zstd3_plus_sha256_s"]
        w(f"| `evident-reporter build --day` | {build['wall_s']:.2f} s | {build['max_rss_mib']:.0f} MiB "
          f"| zstd -3 + SHA-256 of the same bytes: {base:.2f} s | {build['wall_s'] / base:.1f}× "
          f"| ≤ 5 s, ≤ 256 MiB | {verdict(build['wall_s'] <= 5 and build['max_rss_mib'] <= 256)} |")
        v = pl["verify"]
        vb2 = b["zstd_decode_plus_sha256_s"]
        w(f"| `evident-verify pack` (everything) | {v['wall_s']:.2f} s | {v['max_rss_mib']:.0f} MiB "
          f"| zstd decode + SHA-256: {vb2:.2f} s; `verify_batch` of the same signatures (2 threads): "
          f"{b['verify_batch_s']:.2f} s | {v['wall_s'] / (vb2 + b['verify_batch_s']):.1f}× their sum "
          f"| ≤ 10 s, ≤ 256 MiB | {verdict(v['wall_s'] <= 10 and v['max_rss_mib'] <= 256)} |")
        n = pl["verify_no_sigs"]
        w(f"| `evident-verify pack` without producer signatures | {n['wall_s']:.2f} s | {n['max_rss_mib']:.0f} MiB "
          f"| zstd decode + SHA-256: {vb2:.2f} s | {n['wall_s'] / vb2:.1f}× | | |")
        if "verifier_binary_bytes" in pl:
            w(f"| `evident-verify` release binary size | {pl['verifier_binary_bytes'] / 1e6:.1f} MB | | | | | |")
        w("")

    # Peer.
    ev, py = load("target/peer/evident.json"), load("target/peer/pymerkle.json")
    if ev and py:
        w("## Peer comparison: pymerkle `SqliteTree` (RFC 9162, Python)")
        w("")
        w(f"Same work on both: append {ev['entries']:,} entries of ~{ev['avg_entry_bytes']:.0f} bytes "
          "(batches of 10,000), then 1,000 inclusion and 1,000 consistency proofs at the full size. "
          "Evident also validates each record against its schema and canonicalizes it. "
          "`scripts/peer_pymerkle.py` vs `ledger/benches/peer.rs`.")
        w("")
        w("| work | Evident | pymerkle | Evident ÷ pymerkle |")
        w("| --- | --- | --- | --- |")
        for k, label in (("append_s", "append"), ("inclusion_1000_s", "1,000 inclusion proofs"),
                         ("consistency_1000_s", "1,000 consistency proofs")):
            w(f"| {label} | {ev[k]:.3f} s | {py[k]:.3f} s | {ev[k] / py[k]:.3f} |")
        w("")
    w("## History")
    w("")
    w("What each performance change bought, measured with its command next to same-run baselines, "
      "and what was tried and dropped, is recorded in `docs/perf/README.md`.")
    w("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
