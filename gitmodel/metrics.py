"""The numbers a training run records beside its weights, sorted into metrics (what the run
measured: loss, accuracy ...) and parameters (what it was given: learning rate, steps ...).

Numbers come from a checkpoint's pointer (its `[metrics]` scalars, and `[metadata]` values
that read as numbers or hold a JSON object of numbers) and from metrics and params files
(JSON or YAML) that `.gitmodel` names. The rule that tells metrics from parameters is in
docs/review.md ("Metrics and parameters"); `Rules` carries the repository's overrides.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from dataclasses import dataclass

from gitmodel.errors import GitmodelError
from gitmodel.pointer import Pointer

METRIC, PARAM = "metric", "param"

# Words that make a key a metric, and which way is better. A key is cut into words at
# anything that is not a letter or digit and at lower-to-upper case steps (valLoss).
LOWER_IS_BETTER = {"loss", "error", "err", "perplexity", "ppl", "mse", "mae", "rmse", "wer",
                   "cer", "ter", "nll", "kl", "fid", "bpc", "bpb", "latency"}
HIGHER_IS_BETTER = {"acc", "accuracy", "f1", "precision", "recall", "auc", "auroc", "auprc",
                    "bleu", "rouge", "rouge1", "rouge2", "rougel", "meteor", "chrf", "map",
                    "ndcg", "mrr", "spearman", "pearson", "top1", "top5", "em", "exact",
                    "score", "reward", "iou", "miou", "dice", "r2", "matthews", "mcc",
                    "throughput"}
# A key whose first word names an evaluation split is a metric whatever follows (eval_runtime).
EVALUATION_PREFIXES = {"eval", "val", "valid", "validation", "test", "dev", "metrics"}

MAX_NUMBERS = 500                      # per source: a config dump is not a report
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf|infinity)",
                     re.IGNORECASE)
_WORD = re.compile(r"[A-Z]+(?![a-z])\d*|[A-Z]?[a-z]+\d*|\d+")


class MetricsFileError(GitmodelError):
    pass


@dataclass(frozen=True)
class Rules:
    """Overrides from `.gitmodel` ([review] metric = GLOB, param = GLOB): key patterns,
    matched case-insensitively against the whole key; a metric pattern wins over a param one."""
    metric: tuple[str, ...] = ()
    param: tuple[str, ...] = ()

    def kind(self, key: str) -> str:
        lowered = key.lower()
        if any(fnmatch.fnmatchcase(lowered, p.lower()) for p in self.metric):
            return METRIC
        if any(fnmatch.fnmatchcase(lowered, p.lower()) for p in self.param):
            return PARAM
        return default_kind(key)


def words(key: str) -> list[str]:
    """Lower-case words of a key; a word with trailing digits that is not known as it is
    (bleu4, loss2) stands for its letters."""
    out = []
    for word in _WORD.findall(key):
        word = word.lower()
        stripped = word.rstrip("0123456789")
        known = word in LOWER_IS_BETTER or word in HIGHER_IS_BETTER or word in EVALUATION_PREFIXES
        out.append(word if known or not stripped else stripped)
    return out


def default_kind(key: str) -> str:
    found = words(key)
    if found and found[0] in EVALUATION_PREFIXES:
        return METRIC
    return METRIC if any(w in LOWER_IS_BETTER or w in HIGHER_IS_BETTER for w in found) else PARAM


def better(key: str) -> int:
    """+1 if a larger value is better, -1 if a smaller one is, 0 if the key does not say.
    The last word that names a direction decides (val_acc_loss is a loss)."""
    for word in reversed(words(key)):
        if word in LOWER_IS_BETTER:
            return -1
        if word in HIGHER_IS_BETTER:
            return 1
    return 0


def as_number(text: str) -> float | None:
    """A metadata value as a number, when the whole value is one (not "1.2.3" or "v2")."""
    text = text.strip()
    return float(text) if _NUMBER.fullmatch(text) else None


def _flatten(value, prefix: str, out: dict[str, float]) -> None:
    if len(out) >= MAX_NUMBERS:
        return
    if isinstance(value, bool):
        return                                     # flags are neither
    if isinstance(value, (int, float)):
        out[prefix] = float(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, str) and prefix:
        number = as_number(value)
        if number is not None:
            out[prefix] = number
    # lists are a series, not one number; the last entry of a history is not guessed at


def from_pointer(ptr: Pointer | None) -> dict[str, float]:
    """The numbers a checkpoint carries: its scalars, then metadata values that are numbers,
    or JSON objects whose leaves are (a `{"metrics": "{\\"loss\\": 0.4}"}` metadata entry)."""
    if ptr is None:
        return {}
    found: dict[str, float] = dict(ptr.metrics)
    for key, text in ptr.metadata:
        if key in found:
            continue
        number = as_number(text)
        if number is not None:
            found[key] = number
        elif text.lstrip().startswith("{"):
            try:
                _flatten(json.loads(text), key, found)
            except ValueError:
                pass
    return found


def from_document(data: bytes, name: str) -> dict[str, float]:
    """The numbers of a metrics or params file: JSON, or YAML (by its extension), nested keys
    joined with dots."""
    is_yaml = name.lower().endswith((".yaml", ".yml"))
    try:
        if is_yaml:
            import yaml
            value = yaml.safe_load(data)
        else:
            value = json.loads(data)
    except Exception as err:        # noqa: BLE001 - any parse error becomes the user's message
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        from gitmodel.quoting import quote_path
        shown = quote_path(name)
        raise MetricsFileError(f"{shown} does not parse as {'YAML' if is_yaml else 'JSON'}: "
                               f"{reason if reason.isprintable() else quote_path(reason)}",
                               f"fix {shown} or remove it from the [review] section of .gitmodel") from None
    found: dict[str, float] = {}
    _flatten(value, "", found)
    return found


@dataclass
class NumberDiff:
    """One number across two versions (None where a side lacks it)."""
    key: str
    old: float | None
    new: float | None
    kind: str                  # METRIC or PARAM
    source: str                # the checkpoint's or the file's path
    better: int = 0            # +1 larger is better, -1 smaller is better, 0 unknown

    @property
    def changed(self) -> bool:
        if self.old is None or self.new is None:
            return self.old is not self.new
        return not (self.old == self.new or (math.isnan(self.old) and math.isnan(self.new)))

    def verdict(self) -> str:
        """"better", "worse" or "" (no direction, no change, or a side missing)."""
        if self.kind != METRIC or not self.better or not self.changed or self.old is None \
                or self.new is None or math.isnan(self.old) or math.isnan(self.new):
            return ""
        return "better" if (self.new - self.old) * self.better > 0 else "worse"


def compare(old: dict[str, float], new: dict[str, float], source: str, rules: Rules,
            forced: str | None = None) -> list[NumberDiff]:
    """Numbers of two versions of one source, metrics first, each group sorted by key.
    `forced` makes every number of the source a metric or a parameter (a named file)."""
    rows = []
    for key in sorted(set(old) | set(new)):
        kind = forced or rules.kind(key)
        rows.append(NumberDiff(key, old.get(key), new.get(key), kind, source,
                               better(key) if kind == METRIC else 0))
    return sorted(rows, key=lambda r: r.kind != METRIC)
