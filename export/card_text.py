"""The words of a model card: default data sources and limitations, and ``card.md`` from the JSON.

Kept apart from :mod:`export.card` (which writes and reads the files) so the prose can grow
without burying the mechanics.
"""

from __future__ import annotations

from typing import Any

DATA_SOURCES: dict[str, list[dict[str, str]]] = {
    "fashion-mnist": [
        {
            "name": "Fashion-MNIST (Xiao, Rasul, Vollgraf, 2017): 60,000 training and 10,000 test "
            "28x28 grey images of Zalando articles, 10 classes",
            "licence": "MIT",
            "origin": "Debian package dataset-fashion-mnist (/usr/share/datasets/fashion-mnist)",
        }
    ],
}

LIMITATIONS: dict[str, list[str]] = {
    "fashion-mnist": [
        "Trained on centred 28x28 grey product photos on a black background: photographs of "
        "clothes (worn, cluttered, light background) are far outside this distribution and get "
        "confident but meaningless answers.",
        "The validation split is the official test split; the shipped epoch is the last one of a "
        "fixed schedule, never selected on it, so the test score is unbiased by selection.",
        "Shirt, T-shirt/top, Pullover and Coat are the classes most often confused.",
    ],
}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _metrics_md(metrics: dict[str, Any]) -> list[str]:
    """Scalars as one table; each nested mapping (e.g. per source) as a table of its own."""
    lines = ["| metric | value |", "| --- | --- |"]
    tables: list[str] = []
    for key, value in metrics.items():
        if not isinstance(value, dict):
            lines.append(f"| {key} | {_fmt(value)} |")
            continue
        rows = list(value.items())
        columns = sorted({c for _, r in rows if isinstance(r, dict) for c in r})
        tables += ["", f"**{key}**", ""]
        if columns:
            tables += [f"| | {' | '.join(columns)} |", "| --- |" + " --- |" * len(columns)]
            for row_name, row in rows:
                cells = [_fmt(row.get(c, "")) if isinstance(row, dict) else "" for c in columns]
                tables.append(f"| {row_name} | {' | '.join(cells)} |")
        else:
            tables += ["| | value |", "| --- | --- |"]
            tables += [f"| {k} | {_fmt(v)} |" for k, v in rows]
    return lines + tables


def render_card_md(card: dict[str, Any]) -> str:
    """``card.md``: the card for people; every number comes from ``card``."""
    training = card["training"]
    pre = card["preprocessing"]
    lines = [
        f"# {card['name']}",
        "",
        f"`{card['arch']}` ({card['parameters']:,} parameters), task `{card['task']}`, "
        f"{len(card['classes'])} classes: {', '.join(card['classes'])}.",
        "",
        "## Data",
        "",
        f"Dataset `{card['data']['dataset']}`; validation split `{card['data']['val_split']}`.",
        "",
        "| source | licence | origin |",
        "| --- | --- | --- |",
        *(
            f"| {s.get('name', '')} | {s.get('licence', '')} | {s.get('origin', '')} |"
            for s in card["data"]["sources"]
        ),
        "",
        f"Serving preprocessing (written into `config.pbtxt` by export): `{pre}`.",
        "",
        "## Training",
        "",
        "```",
        card["command"],
        "```",
        "",
        f"Seed {card['seed']}, {training.get('epochs_run', card['epochs'])} epoch(s) run; "
        f"shipped: {card['shipped_epoch']}. "
        f"Trained on {training.get('cpu')} ({training.get('cpu_count')} cores, "
        f"{training.get('torch_threads')} torch thread(s), torch {training.get('torch_version')}"
        f"{', CUDA ' + str(training['cuda']) if training.get('cuda') else ''}) in "
        f"{training['wall_seconds'] / 60:.1f} min of wall time. "
        "`convserve build-defaults --retrain` reruns this recipe; the same command with the same "
        "thread count on the same machine gives bit-identical weights.",
        "",
        "## Metrics",
        "",
        *_metrics_md(card["metrics"]),
        "",
    ]
    if card.get("curves"):
        lines += [f"![training curves]({card['curves']})", ""]
    if card.get("notes"):
        lines += [card["notes"], ""]
    lines += ["## Limitations", "", *(f"- {item}" for item in card["limitations"]), ""]
    weights = card["weights"]
    lines += [
        "## Weights",
        "",
        f"`{weights['file']}`, {weights['bytes']:,} bytes, sha256 `{weights['sha256']}`.",
        "",
    ]
    return "\n".join(lines)
