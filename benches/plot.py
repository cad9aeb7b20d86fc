"""Draws the benchmark figure of the docs from `make bench`'s results (`benches/results/python.json`).

One PNG, `docs/img/bench-python.png`, three panels: the uncontended `async with` (ns, with the
p25-p75 band of the rounds' ratios to the floor), the contended overhead per task (1000 tasks
through 10 slots), and the memory per queued waiter. ferrolimit, pydantic-ai and
`asyncio.Semaphore` side by side, from one run; the run's date and machine in the title.

    python benches/plot.py [--results benches/results/python.json] [--out docs/img/bench-python.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # after choosing the backend

HERE = Path(__file__).parent
COLORS = {'ferrolimit': '#d9480f', 'pydantic-ai': '#495057', 'asyncio.Semaphore': '#1c7ed6'}


def bars(ax: Any, title: str, unit: str, values: dict[str, float], spread: dict[str, tuple[float, float]]) -> None:
    """One panel: a bar per contender, its value written above it."""
    names = list(values)
    heights = [values[n] for n in names]
    errors = [[values[n] - spread[n][0] for n in names], [spread[n][1] - values[n] for n in names]] if spread else None
    ax.bar(names, heights, color=[COLORS[n] for n in names], yerr=errors, capsize=4)
    for i, name in enumerate(names):
        top = spread[name][1] if spread else values[name]
        ax.annotate(
            f'{values[name]:,.0f} {unit}', (i, top), ha='center', va='bottom', xytext=(0, 3), textcoords='offset points'
        )
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(unit)
    ax.margins(y=0.15)


def figure(results: dict[str, Any], out: Path) -> None:
    """Draw the three panels of `results` into `out`."""
    sections, meta = results['sections'], results['meta']
    uncontended = sections['uncontended']
    floor = uncontended['median_ns']['floor']
    keys = {
        'ferrolimit': 'ferrolimit get_concurrency_context',
        'pydantic-ai': 'pydantic-ai get_concurrency_context',
        'asyncio.Semaphore': 'asyncio.Semaphore async with',
    }
    ratio = uncontended['ratio_to_floor']
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    bars(
        axes[0],
        f'uncontended `async with` (floor: {floor:.0f} ns)',
        'ns',
        {n: ratio[k]['median'] * floor for n, k in keys.items()},
        {n: (ratio[k]['p25'] * floor, ratio[k]['p75'] * floor) for n, k in keys.items()},
    )
    axes[0].set_yscale('log')
    burst = sections['burst']
    overhead = burst['overhead_ns_per_task']
    bars(
        axes[1],
        f'{burst["tasks"]} tasks through {burst["slots"]} slots: overhead per task',
        'ns',
        {n: overhead[n]['median'] for n in COLORS},
        {n: (overhead[n]['p25'], overhead[n]['p75']) for n in COLORS},
    )
    memory = sections['memory']['rss']['limiter_bytes_per_waiter']
    bars(axes[2], 'memory per queued waiter (RSS, beyond the task)', 'B', {n: memory[n] for n in COLORS}, {})
    fig.suptitle(
        f'ferrolimit {meta["ferrolimit"]}, pydantic-ai {meta["pydantic_ai"]}, {meta["implementation"]} '
        f'{meta["python"]} on {meta["event_loop"]}; {meta["nproc"]} cores ({meta["cpu"]}), {meta["date"]}',
        fontsize=10,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f'figure written to {out}')


def main() -> None:
    """Read the results, draw the figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--results', type=Path, default=HERE / 'results' / 'python.json')
    parser.add_argument('--out', type=Path, default=HERE.parent / 'docs' / 'img' / 'bench-python.png')
    args = parser.parse_args()
    figure(json.loads(args.results.read_text()), args.out)


if __name__ == '__main__':
    main()
