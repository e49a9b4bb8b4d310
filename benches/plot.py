"""Latency percentiles against offered rate, from the `sweep` lines of a loadgen results file.

Usage: plot.py RESULTS.jsonl OUT.png [TITLE]. Run by benches/e2e.sh in a venv with matplotlib.
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = {
    "direct": "tab:gray",
    "akgate": "tab:blue",
    "akgate-audit": "tab:cyan",
    "nginx": "tab:orange",
    "nginx-lua": "tab:red",
}
LABELS = {
    "direct": "direct to upstream",
    "akgate": "akgate (full verification)",
    "akgate-audit": "akgate + audit log",
    "nginx": "nginx proxy_pass (no auth)",
    "nginx-lua": "nginx + Lua HMAC-SHA256",
}
PERCENTILES = [("p50_us", "-", "p50"), ("p99_us", "-", "p99"), ("p999_us", "-", "p99.9")]


def main():
    results, out = sys.argv[1], sys.argv[2]
    title = sys.argv[3] if len(sys.argv) > 3 else "Latency vs offered rate (open loop, signed requests)"
    series = {}
    with open(results) as f:
        for line in f:
            try:
                v = json.loads(line)
            except ValueError:
                continue
            if v.get("kind") != "sweep":
                continue
            series.setdefault(v["name"], []).append(v)
    if not series:
        sys.exit("plot.py: no sweep results in " + results)

    order = sorted(series, key=lambda n: list(COLOURS).index(n) if n in COLOURS else 99)
    fig, axes = plt.subplots(1, len(PERCENTILES), figsize=(14, 5), dpi=110, sharey=True)
    for ax, (key, _style, label) in zip(axes, PERCENTILES):
        for name in order:
            runs = sorted(series[name], key=lambda v: v["rate"])
            ax.plot(
                [v["rate"] for v in runs],
                [v[key] for v in runs],
                "-",
                marker="o",
                markersize=3,
                color=COLOURS.get(name),
                label=LABELS.get(name, name),
            )
        ax.set_title(label)
        ax.set_xlabel("offered load (req/s)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("latency from the scheduled send time (µs, log)")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out)


if __name__ == "__main__":
    main()
