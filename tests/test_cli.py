"""The command line (issue 11 §3, §5): every method listed, strict JSON, paper names, exit codes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from patterns import CASES

from lorakit import checks, cli
from lorakit.asynchronous import RULES
from lorakit.cli import main
from lorakit.federated import FEDERATED_METHODS
from lorakit.methods import PATTERNS, REGISTRY

ROOT = Path(__file__).parents[1]


def lorakit_cli(*args, timeout=300):
    """``python -m lorakit.cli ARGS`` in a fresh process with this checkout's lorakit."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "lorakit.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=ROOT,
    )


def _reject_constant(token):
    raise ValueError(f"invalid JSON constant {token}")


# -- lorakit methods ------------------------------------------------------------------------------
def test_methods_lists_every_method_with_its_pattern(capsys):
    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = [tuple(line.split()[:3]) for line in lines]
    # the one registry, in its order: chain, federated, decentralized, asynchronous
    assert listed == [(m.name, m.pattern, m.unit) for m in REGISTRY.values()]
    patterns = [pattern for _, pattern, _ in listed]
    assert sorted(set(patterns), key=patterns.index) == list(PATTERNS)
    # the table of tests/patterns.py (every runnable method with its pattern) is what is listed
    pairs = [(name, pattern) for name, pattern, _ in listed]
    assert sorted(pairs) == sorted((case.method, case.pattern) for case in CASES)
    assert {"rw_lora", "gossip_lora", "fedavg", "fedasync", "fedbuff"} <= {m for m, _ in pairs}
    assert len(listed) == 17
    # the description and source are the registry's
    by_name = {line.split()[0]: line for line in lines}
    for m in REGISTRY.values():
        assert by_name[m.name].endswith(f"{m.description}  [{m.source}]")
    assert by_name["fedstack_lora"].endswith(
        f"{FEDERATED_METHODS['fedstack_lora'][1]}  [{REGISTRY['fedstack_lora'].source}]"
    )


def test_async_registry_names_the_rules():
    assert tuple(m.name for m in REGISTRY.values() if m.pattern == "asynchronous") == RULES


# -- lorakit verify: names, exit codes ------------------------------------------------------------
@pytest.mark.parametrize(
    "name, paper",
    [
        ("rac_lora", "RAC-LoRA"),
        ("RAC-LoRA", "RAC-LoRA"),
        ("raclora", "RAC-LoRA"),
        ("Rac Lora", "RAC-LoRA"),
        ("rac-lora", "RAC-LoRA"),
        ("bernoulli_lora", "Bernoulli-LoRA"),
        ("bern", "Bernoulli-LoRA"),
        ("FSLORA", "FSLoRA"),
        ("rw_lora", "RW-LoRA"),
        ("async_fl", "Async-FL"),
        ("Async-FL", "Async-FL"),
    ],
)
def test_resolve_paper_accepts_the_names_users_type(name, paper):
    assert checks.resolve_paper(name) == paper


def test_every_theorem_key_prefix_names_a_paper():
    from lorakit.theory import THEOREMS

    for key, theorem in THEOREMS.items():
        assert checks.resolve_paper(key.split(".")[0]) == theorem.paper


@pytest.mark.parametrize(
    "name, why", [("nonsense", "names no registered paper"), ("r", "ambiguous")]
)
def test_resolve_paper_lists_the_valid_names(name, why):
    with pytest.raises(ValueError, match=why) as info:
        checks.resolve_paper(name)
    for paper in checks.papers():
        assert paper in str(info.value)
    assert "rac_lora" in str(info.value)


@pytest.mark.parametrize("name", ["nonsense", "r", ""])
def test_verify_unknown_paper_is_a_usage_error(name):
    done = lorakit_cli("verify", "--paper", name, "--fast")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert "usage: lorakit verify" in done.stderr and "--paper" in done.stderr
    for paper in checks.papers():
        assert paper in done.stderr


def test_unknown_command_and_option_are_usage_errors():
    assert lorakit_cli("nonsense").returncode == 2
    assert lorakit_cli("verify", "--fats").returncode == 2


def _frame(statuses):
    return pd.DataFrame(
        {
            "paper": "RAC-LoRA",
            "claim": [f"claim {i}" for i in range(len(statuses))],
            "check": [f"c{i}" for i in range(len(statuses))],
            "measured": [1.0, float("nan"), float("inf")][: len(statuses)],
            "stderr": 0.0,
            "relation": "<=",
            "bound": [2.0, float("-inf"), float("inf")][: len(statuses)],
            "printed_bound": [None, float("nan"), 3.0][: len(statuses)],
            "status": statuses,
            "detail": "",
            "seconds": 0.1,
        }
    )


def test_verify_exit_codes_hold_and_violated(monkeypatch, capsys):
    monkeypatch.setattr(checks, "verify", lambda paper=None, fast=False: _frame(["holds"] * 3))
    assert main(["verify"]) == cli.OK == 0
    assert capsys.readouterr().out.rstrip().endswith("3 of 3 corrected statements hold")
    statuses = ["holds", "violated", "not separable"]
    monkeypatch.setattr(checks, "verify", lambda paper=None, fast=False: _frame(statuses))
    assert main(["verify"]) == cli.VIOLATED == 1
    assert capsys.readouterr().out.rstrip().endswith("2 of 3 corrected statements hold")
    assert cli.USAGE == 2


# -- lorakit verify --json: strict JSON -----------------------------------------------------------
def test_verify_json_writes_non_finite_numbers_as_null(monkeypatch, capsys):
    statuses = ["holds", "holds", "holds"]
    monkeypatch.setattr(checks, "verify", lambda paper=None, fast=False: _frame(statuses))
    assert main(["verify", "--json"]) == 0
    out = capsys.readouterr().out
    assert "NaN" not in out and "Infinity" not in out
    records = json.loads(out, parse_constant=_reject_constant)
    assert [r["measured"] for r in records] == [1.0, None, None]
    assert [r["bound"] for r in records] == [2.0, None, None]
    assert [r["printed_bound"] for r in records] == [None, None, 3.0]


def test_verify_json_is_strict_json_on_a_real_run():
    # RW-LoRA's checks include an infinite mixing time (the periodic ring) and printed bounds
    # that do not apply (NaN): exactly what used to come out as bare Infinity / NaN tokens.
    done = lorakit_cli("verify", "--paper", "rw_lora", "--fast", "--json")
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout, parse_constant=_reject_constant)
    assert {r["paper"] for r in records} == {"RW-LoRA"}
    assert all(r["status"] != "violated" for r in records)
    ring = next(r for r in records if r["check"] == "rw_lora.ring_periodic")
    assert ring["measured"] is None and ring["bound"] is None  # τ_mix = ∞ on both sides
    assert {"measured", "bound", "relation", "claim", "detail"} <= set(records[0])


def test_verify_json_reports_each_check_and_exits_zero(capsys):
    assert main(["verify", "--paper", "rac_lora", "--fast", "--json"]) == 0
    records = json.loads(capsys.readouterr().out, parse_constant=_reject_constant)
    assert records and {r["paper"] for r in records} == {"RAC-LoRA"}
    assert len(records) == sum(c.paper == "RAC-LoRA" for c in checks.CHECKS.values())
    assert all(r["status"] != "violated" for r in records)
    assert {"measured", "bound", "relation", "claim"} <= set(records[0])
