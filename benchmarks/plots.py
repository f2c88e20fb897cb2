"""PNG plots of the benchmark result JSONs, written beside them.

    .venv/bin/python -m benchmarks.plots [RESULTS_DIR]   # default benchmarks/results

The one way to make the plots: after any bench script has written its JSON, run this
over the results folder; it redraws every plot from what is there. What a file holds is
told from its shape, not its name:
- end to end (bench_e2e.py: {"servers": {name: {"levels": [...]}}}) -> <stem>_throughput.png
  (requests/s and output tokens/s against concurrency) and <stem>_latency.png (TTFT p50,
  latency p50 and p99 against concurrency), one line per server;
- preprocessing (bench_preprocessing.py: {"single": [{"image", "max_tiles", "images_per_s"}]})
  -> <stem>.png, images/s per image size and tile budget, one bar per implementation.
Other JSONs are skipped. Figures are only as good as the machine they were measured on:
see RESULTS.md for its load.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on a server or in CI

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

RESULTS = Path(__file__).resolve().parent / "results"
# One colour per series everywhere, so "ours" looks the same in every figure.
SERIES_COLOURS = {"ours": "#1f77b4", "builtin": "#ff7f0e", "ours-uint8": "#1f77b4", "ours-f32": "#6baed6",
                  "official": "#2ca02c"}
LATENCY_PANELS = {"ttft_p50_s": ("TTFT p50", "o"), "latency_p50_s": ("latency p50", "s"),
                  "latency_p99_s": ("latency p99", "^")}
DPI = 110


def _colour(name: str, position: int) -> str:
    return SERIES_COLOURS.get(name, f"C{(position + 3) % 10}")


def is_e2e(data: Any) -> bool:
    servers = data.get("servers") if isinstance(data, dict) else None
    return isinstance(servers, dict) and any(isinstance(s, dict) and s.get("levels") for s in servers.values())


def is_preprocessing(data: Any) -> bool:
    single = data.get("single") if isinstance(data, dict) else None
    return isinstance(single, list) and any(isinstance(row, dict) and "images_per_s" in row for row in single)


def _levels(data: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """server -> its levels sorted by concurrency, errored-out levels included (their figures are real)."""
    return {name: sorted(server["levels"], key=lambda level: level["concurrency"])
            for name, server in data["servers"].items() if isinstance(server, dict) and server.get("levels")}


def _concurrency_axis(axis, concurrencies: list[int]) -> None:
    axis.set_xscale("log", base=2)
    axis.set_xticks(concurrencies, [str(c) for c in concurrencies])
    axis.minorticks_off()
    axis.set_xlabel("concurrency (requests in flight)")
    axis.grid(True, alpha=0.3)
    axis.set_ylim(bottom=0)


def plot_e2e(data: dict[str, Any], title: str, out_dir: Path, stem: str) -> list[Path]:
    levels = _levels(data)
    concurrencies = sorted({level["concurrency"] for rows in levels.values() for level in rows})
    written = []

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = (("requests_per_s", "requests/s"), ("output_tokens_per_s", "output tokens/s"))
    for axis, (key, label) in zip(axes, panels):
        for position, (name, rows) in enumerate(levels.items()):
            axis.plot([r["concurrency"] for r in rows], [r[key] for r in rows], marker="o", linewidth=2,
                      color=_colour(name, position), label=name)
        axis.set_ylabel(label)
        axis.set_title(label)
        _concurrency_axis(axis, concurrencies)
        axis.legend()
    figure.suptitle(f"Throughput against concurrency ({title})")
    written.append(_save(figure, out_dir / f"{stem}_throughput.png"))

    figure, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for axis, (key, (label, marker)) in zip(axes, LATENCY_PANELS.items()):
        for position, (name, rows) in enumerate(levels.items()):
            axis.plot([r["concurrency"] for r in rows], [r[key] * 1000 for r in rows], marker=marker, linewidth=2,
                      color=_colour(name, position), label=name)
        axis.set_title(label)
        _concurrency_axis(axis, concurrencies)
        axis.legend()
    axes[0].set_ylabel("milliseconds (lower is better)")
    figure.suptitle(f"Latency against concurrency ({title})")
    written.append(_save(figure, out_dir / f"{stem}_latency.png"))
    return written


def plot_preprocessing(data: dict[str, Any], title: str, out_dir: Path, stem: str) -> list[Path]:
    rows = [row for row in data["single"] if isinstance(row, dict) and row.get("images_per_s")]
    names = list(dict.fromkeys(name for row in rows for name in row["images_per_s"]))
    width = 0.8 / len(names)
    figure, axis = plt.subplots(figsize=(max(8, 1.3 * len(rows)), 4.8))
    for position, name in enumerate(names):
        xs = [index + (position - (len(names) - 1) / 2) * width for index in range(len(rows))]
        values = [row["images_per_s"].get(name, 0.0) for row in rows]
        bars = axis.bar(xs, values, width, color=_colour(name, position), label=name)
        axis.bar_label(bars, fmt="%.1f", fontsize=6, padding=1)  # 4000x3000 bars are short; keep them readable
    axis.set_xticks(range(len(rows)), [f"{row['image']}\nmax_tiles {row['max_tiles']}\n({row.get('tiles', '?')} tiles)"
                                       for row in rows], fontsize=8)
    axis.set_ylabel("images/s (higher is better)")
    axis.grid(True, axis="y", alpha=0.3)
    axis.legend()
    cpu = f"{data['cpu']}, {data.get('torch_threads', '?')} torch thread(s)" if data.get("cpu") else title
    axis.set_title(f"Preprocessing (decode + tiling + normalisation) per image size ({cpu})")
    if data.get("builtin_skipped"):
        axis.text(0.01, 0.98, f"builtin skipped: {data['builtin_skipped']}", transform=axis.transAxes, va="top",
                  fontsize=8)
    return [_save(figure, out_dir / f"{stem}.png")]


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def plot_file(path: Path, out_dir: Path | None = None) -> list[Path]:
    """The PNGs for one result JSON (none if it is not a kind this module plots)."""
    data = json.loads(path.read_text())
    out_dir = out_dir or path.parent
    if is_e2e(data):
        return plot_e2e(data, path.name, out_dir, path.stem)
    if is_preprocessing(data):
        return plot_preprocessing(data, path.name, out_dir, path.stem)
    return []


def plot_results(results_dir: Path = RESULTS) -> list[Path]:
    return [png for path in sorted(results_dir.glob("*.json")) for png in plot_file(path)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="?", type=Path, default=RESULTS,
                        help=f"folder of result JSONs (default {RESULTS})")
    args = parser.parse_args(argv)
    written = plot_results(args.results)
    for path in written:
        print(path)
    if not written:
        print(f"no end-to-end or preprocessing result JSONs in {args.results}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
