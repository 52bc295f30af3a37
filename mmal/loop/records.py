"""What a comparison run records, and the checks that keep its results comparable.

``runs/plan.json`` (every request's strategies and seeds, the largest
``--rounds``, the budgets), ``runs/status.json`` (each trajectory's latest
outcome) and ``runs/configs/seed<k>.toml`` (the config a seed's trajectories
train with). A request with other budgets, or a ``mmal.toml`` changed since the
run started, is refused: its results would not be comparable.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mmal.atomic import write_text_atomic
from mmal.config import dump_config, load_config
from mmal.errors import ConfigError, WorkspaceError
from mmal.lock import hold
from mmal.loop.layout import RunLayout, write_json_atomic
from mmal.stamp import RUN_PLAN, RUN_STATUS, stamped


def write_status(layout: RunLayout, pairs, completed, failures: list[dict],
                 rounds: int) -> None:
    """runs/status.json: this run's trajectories replace their own entries, others stay.

    Separate runs (``--only`` under a scheduler) thus leave one status with
    every trajectory's latest outcome.
    """
    ours, seeds = set(pairs), {k for _, k in pairs}
    with hold(layout.lock, "mmal run"):
        try:
            old = layout.read_status() or {}
        except WorkspaceError:  # a foreign or damaged file: this run rewrites it
            old = {}
        kept = [c for c in old.get("completed", [])
                if (c.get("strategy"), c.get("seed")) not in ours]
        kept_failures = [f for f in old.get("failures", []) if not (
            (f.get("strategy"), f.get("seed")) in ours
            or (f.get("strategy") is None and f.get("seed") in seeds))]
        entries = kept + [{"strategy": s, "seed": k} for s, k in completed]
        write_json_atomic(layout.status, stamped(RUN_STATUS, {
            "completed": sorted(entries, key=lambda c: (str(c.get("strategy")), c.get("seed"))),
            "failures": kept_failures + failures,
            "rounds": rounds,
        }))


def write_seed_config(base, path: Path, seed: int, budget: int, initial_budget: int) -> None:
    """runs/configs/seed<k>.toml: the base config with this seed and the run's budgets."""
    text = _seed_config_text(base, seed, budget, initial_budget)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    write_text_atomic(path, text)


def _seed_config(base, seed: int, budget: int, initial_budget: int):
    al = dataclasses.replace(base.al, seed=seed, budget=budget, initial_budget=initial_budget)
    return dataclasses.replace(base, al=al)


def _seed_config_text(base, seed: int, budget: int, initial_budget: int) -> str:
    return dump_config(_seed_config(base, seed, budget, initial_budget),
                       header=f"Config of seed {seed} of `mmal run` (written from mmal.toml).")


def check_plan(layout: RunLayout, budget, initial_budget, mc_dropout) -> dict | None:
    """The stored plan; WorkspaceError when the request would mix incomparable results."""
    plan = layout.read_plan()
    if plan is not None:
        for key, value in (("budget", budget), ("initial_budget", initial_budget),
                           ("mc_dropout", mc_dropout)):
            if plan.get(key) != value:
                flag = "--" + key.replace("_", "-")
                raise WorkspaceError(
                    f"{layout.plan}: this run was started with {flag} {plan.get(key)}, not "
                    f"{value}; pass the same value to resume or extend it, or use a new "
                    "workspace")
    return plan


def write_plan(layout: RunLayout, plan, strategies, seeds, rounds, budget, initial_budget,
                mc_dropout) -> None:
    """Record the union of every request in runs/plan.json (the report's expectations)."""
    seen_strategies = list(plan["strategies"]) if plan else []
    seen_seeds = list(plan["seeds"]) if plan else []
    write_json_atomic(layout.plan, stamped(RUN_PLAN, {
        "strategies": seen_strategies + [s for s in strategies if s not in seen_strategies],
        "seeds": seen_seeds + [s for s in seeds if s not in seen_seeds],
        "rounds": max(rounds, plan["rounds"] if plan else 0),
        "budget": budget, "initial_budget": initial_budget, "mc_dropout": mc_dropout,
    }))


def check_seed_config(layout: RunLayout, base, seed: int, budget: int,
                      initial_budget: int) -> None:
    """WorkspaceError when seed ``seed``'s stored config differs from mmal.toml's now.

    Compared key by key with defaults filled in, less the logging keys: a key a
    later mmal added with its old behaviour as default, or TensorBoard switched
    on, leaves a run comparable.
    """
    path = layout.config(seed)
    if not path.exists():
        return
    want = _seed_config(base, seed, budget, initial_budget).to_dict(logging=False)
    try:
        same = load_config(path).to_dict(logging=False) == want
    except ConfigError:  # e.g. a folder it names is gone
        same = False
    if not same:
        raise WorkspaceError(f"{path}: differs from what {layout.workspace}/mmal.toml gives now; "
                             "the config changed since this run started, so its results would "
                             "not be comparable; restore mmal.toml or use a new workspace")
