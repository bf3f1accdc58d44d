#!/usr/bin/env python3
"""Peer benchmark: pymerkle's SqliteTree (RFC 9162, Python) on the same work
as ledger/benches/peer.rs: append N entries of ~500 bytes, then 1,000
inclusion proofs and 1,000 consistency proofs at the full size.

Usage: peer_pymerkle.py N DBFILE OUT.json
"""
import json
import random
import sys
import time

from pymerkle import SqliteTree


def entry(i: int) -> bytes:
    body = {"invariant_id": "INV-014", "severity": "P0", "status": "pass",
            "verification_command": "scripts/audit/verify_inv_014.sh " + "x" * 260,
            "evidence_hash": "sha256:" + "ab" * 32, "duration_ms": 412, "run_id": f"ci-run-{i}"}
    return json.dumps({"id": f"rec-{i}", "kind": "invariant_result", "producer": "legacy-batch",
                       "at": "2026-11-21T09:30:12Z", "body": body}, separators=(",", ":")).encode()


def main() -> None:
    n, dbfile, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    tree = SqliteTree(dbfile, algorithm="sha256")
    entries = [entry(i) for i in range(n)]
    t0 = time.perf_counter()
    for start in range(0, n, 10_000):
        tree.append_entries(entries[start:start + 10_000])
    t1 = time.perf_counter()
    rng = random.Random(42)
    size = tree.get_size()
    for _ in range(1000):
        tree.prove_inclusion(rng.randint(1, size), size)
    t2 = time.perf_counter()
    for _ in range(1000):
        tree.prove_consistency(rng.randint(1, size - 1), size)
    t3 = time.perf_counter()
    json.dump({"entries": n, "append_s": t1 - t0, "inclusion_1000_s": t2 - t1, "consistency_1000_s": t3 - t2,
               "avg_entry_bytes": sum(map(len, entries)) / n}, open(out, "w"))


if __name__ == "__main__":
    main()
