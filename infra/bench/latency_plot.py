"""Plots end-to-end latency against throughput from `emulator bench --json` lines.

Usage: latency_plot.py RESULTS.jsonl OUT.png "machine description"
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    results_path, out, machine = sys.argv[1], sys.argv[2], sys.argv[3]
    runs = [json.loads(line) for line in open(results_path) if line.strip()]
    runs.sort(key=lambda r: r["latency_rate"])
    if not runs:
        sys.exit("latency_plot: no results to plot")
    rates = [r["latency_rate"] for r in runs]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    ax.plot(rates, [r["pipeline"]["p50_ms"] for r in runs], "o-", label="Kafka Replicator p50")
    ax.plot(rates, [r["pipeline"]["p99_ms"] for r in runs], "s-", label="Kafka Replicator p99")
    peers = [r for r in runs if r.get("mirror_maker_2")]
    if peers:
        peer_rates = [r["latency_rate"] for r in peers]
        ax.plot(peer_rates, [r["mirror_maker_2"]["p50_ms"] for r in peers], "o--", label="MirrorMaker 2 p50")
        ax.plot(peer_rates, [r["mirror_maker_2"]["p99_ms"] for r in peers], "s--", label="MirrorMaker 2 p99")
    ax.set_xscale("log")
    ax.set_xticks(rates)
    ax.set_xticklabels([str(r) for r in rates])
    ax.set_xlabel("steady rate, events/s (1 KiB events, 6 partitions)")
    ax.set_ylabel("source timestamp → visible to read_committed, ms")
    # The set-up on a line of its own: with a shaped link it is too long for one.
    ax.set_title(f"End-to-end latency against throughput\n({machine})", fontsize=10)
    highest = max(line.get_ydata().max() for line in ax.get_lines())
    ax.set_ylim(0, highest * 1.45)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", ncol=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(out)


if __name__ == "__main__":
    main()
