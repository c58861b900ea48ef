"""Pictures of checkpoints (matplotlib, an optional dependency)."""

from __future__ import annotations

from pathlib import Path

from gitmodel.errors import GitmodelError


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise GitmodelError("--plot needs matplotlib", "pip install 'gitmodel[plot]'") from None
    return plt


def metrics_over_commits(versions: list, out: Path, title: str) -> None:
    """Each metric of (commit, pointer) versions, oldest first, over commits."""
    names = sorted({k for _, ptr in versions for k, _ in ptr.metrics})
    if not names:
        raise GitmodelError(f"no metrics recorded in the versions of {title}")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    labels = [str(c.id)[:7] for c, _ in versions]
    for name in names:
        points = [(i, dict(ptr.metrics).get(name)) for i, (_, ptr) in enumerate(versions)]
        xs = [i for i, v in points if v is not None]
        ax.plot(xs, [v for _, v in points if v is not None], marker="o", label=name)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_title(f"{title}: metrics by commit")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
