"""Theorem scenarios (lorakit.theory.scenarios) and the theory-constants app (lorakit.widgets):
each check's run defined once, its curve over T, and the spectrum of E[H]."""

from __future__ import annotations

import math

import altair as alt
import numpy as np
import pytest

from lorakit import checks, widgets
from lorakit.theory import THEOREMS, get_theorem
from lorakit.theory.scenarios import SCENARIOS, curve, get_scenario

KEYS = sorted(SCENARIOS)
REQUIRED = {
    "rac_lora.theorem_5.3", "rac_lora.theorem_5.5", "rac_lora.theorem_e.2",
    "rac_lora.theorem_e.3", "rac_lora.theorem_d.3", "bernoulli_lora.theorem_1",
    "bernoulli_lora.theorem_9", "bernoulli_lora.theorem_8", "bernoulli_lora.theorem_14",
    "bernoulli_lora.theorem_15", "bernoulli_lora.theorem_5", "bernoulli_lora.theorem_18",
    "bernoulli_lora.theorem_10_optimal_step",
}  # fmt: skip


@pytest.fixture(scope="module")
def check_table():
    return checks.verify(fast=True, names=KEYS).set_index("check")


def test_scenarios_cover_the_theorems_and_are_the_registered_checks():
    assert REQUIRED <= set(SCENARIOS)
    for key, scenario in SCENARIOS.items():
        assert key in THEOREMS and key in checks.CHECKS and scenario.key == key
        assert scenario.T >= 1 and scenario.seeds[0] <= scenario.seeds[1]


@pytest.mark.parametrize("key", KEYS)
def test_corrected_bound_holds_at_every_admissible_T(key):
    frame = curve(key, step_factor=1.0)
    assert list(frame.columns) == ["T", "measured", "stderr", "corrected", "printed", "admissible"]
    assert frame["T"].is_monotonic_increasing and frame["T"].iloc[0] == 1
    assert frame["admissible"].any(), "the check's own step must be admissible somewhere"
    inside = frame[frame["admissible"]]
    assert inside["measured"].notna().all() and inside["corrected"].notna().all()
    slack = inside["measured"] - 3 * inside["stderr"]
    assert (slack <= inside["corrected"]).all(), inside[slack > inside["corrected"]]
    if THEOREMS[key].corrected is None:
        assert frame["printed"].isna().all()  # no separate printed form


@pytest.mark.parametrize("key", KEYS)
def test_curve_at_the_checks_step_and_T_reproduces_the_check(key, check_table):
    scenario = get_scenario(key)
    row = check_table.loc[key]
    frame = curve(key, seeds=scenario.check_seeds(fast=True))
    at = frame.set_index("T").loc[scenario.T]
    assert at["measured"] == row["measured"]  # the same run, seeds and measurement: identical
    assert at["stderr"] == row["stderr"]
    assert at["corrected"] == pytest.approx(row["bound"], rel=1e-9)
    if row["printed_bound"] is not None and not math.isnan(row["printed_bound"]):
        assert at["printed"] == pytest.approx(row["printed_bound"], rel=1e-9)
    assert bool(at["admissible"])  # a check runs inside the corrected step conditions


def test_curve_is_one_run_measured_at_every_T():
    """E f(W^T) is the gap logged at step T of one run; Theorem 5.5 is tight at γ = 1/L, so the
    bound (1 − r/m)^T Δ^0 matches the measured gap at every T (within 4 SE)."""
    frame = curve("rac_lora.theorem_5.5", seeds=range(100))
    assert len(frame) == 10
    assert (abs(frame["measured"] - frame["corrected"]) <= 4 * frame["stderr"]).all()
    longer = curve("rac_lora.theorem_5.5", T=20, seeds=range(100))
    assert np.array_equal(longer["measured"].to_numpy()[:10], frame["measured"].to_numpy())


def test_step_factor_outside_the_conditions_is_marked_not_admissible():
    frame = curve("rac_lora.theorem_5.5", step_factor=1.5, seeds=4)  # γ = 1.5 > 1/L
    assert not frame["admissible"].any()
    assert frame.attrs["gamma"] == pytest.approx(1.5)
    # Theorem 5 (Fed-QGD): the cap 1/(L√(ω/M·λ_max·T)) shrinks with T.
    qgd = curve("bernoulli_lora.theorem_5", step_factor=3.0, seeds=2)
    assert qgd["admissible"].iloc[0] and not qgd["admissible"].iloc[-1]
    # The optimal step γ*(T) of Theorem 10 is the check's at its own T only.
    opt = curve("bernoulli_lora.theorem_10_optimal_step", seeds=2)
    assert opt.loc[opt["admissible"], "T"].tolist() == [50]
    # γ = 2.5 > 2/L blows up: the curve stops measuring at the first diverged seed, and says so.
    blown = curve("rac_lora.theorem_e.3", step_factor=5.0, seeds=2)
    first = min(blown.attrs["diverged"].values())
    assert blown.loc[blown["T"] > first, "measured"].isna().all()
    assert blown.loc[blown["T"] <= first, "measured"].notna().all()


def test_erratum_separates_on_the_curve():
    frame = curve("rac_lora.theorem_e.3")
    last = frame.iloc[-1]
    assert last["measured"] - 3 * last["stderr"] > last["printed"]  # the printed form fails
    assert last["measured"] - 3 * last["stderr"] <= last["corrected"]  # the corrected one holds


def test_curve_rejects_bad_input():
    with pytest.raises(ValueError, match="key"):
        curve("rac_lora.theorem_9.9")
    with pytest.raises(ValueError, match="step_factor"):
        curve("rac_lora.theorem_5.3", step_factor=0.0)
    with pytest.raises(ValueError, match="step_factor"):
        curve("bernoulli_lora.theorem_10_polyak_step", step_factor=0.5)
    with pytest.raises(ValueError, match="T"):
        curve("rac_lora.theorem_5.3", T=0)
    with pytest.raises(ValueError, match="seeds"):
        curve("rac_lora.theorem_5.3", seeds=[])
    with pytest.raises(ValueError, match="seeds must be distinct"):
        curve("rac_lora.theorem_5.3", seeds=[1, 1])


# ---------------------------------------------------------------------------------------------
# The spectrum of E[H] (RAC-LoRA Assumption 5.1, Bernoulli-LoRA Assumption 1)
# ---------------------------------------------------------------------------------------------
def test_gaussian_eigenvalues_are_r_over_m_and_r_over_n():
    frame = widgets.projector_eigen_frame("gaussian", m=16, n=24, r=2, p=0.5, samples=2000)
    assert len(frame) == 16 + 24
    assert set(frame.groupby("side")["d"].first().items()) == {("left", 16), ("right", 24)}
    assert np.allclose(frame.loc[frame.side == "left", "r_over_d"], 2 / 16)
    assert np.allclose(frame.loc[frame.side == "right", "r_over_d"], 2 / 24)
    # The extreme eigenvalues of the noisy mean sit about 2σ√d from the truth.
    assert (abs(frame["eigenvalue"] - frame["r_over_d"]) <= 6 * frame["tolerance"]).all()
    assert np.allclose(frame["exact"], frame["r_over_d"])  # closed form (r/d)·I
    # λ^p from the measured λ's, and the exact λ^p = p·r/m + (1 − p)·r/n.
    lam_b = frame[frame.side == "left"]["eigenvalue"]
    lam_a = frame[frame.side == "right"]["eigenvalue"]
    assert frame["lambda_p_min"].iloc[0] == pytest.approx(0.5 * lam_b.min() + 0.5 * lam_a.min())
    assert frame["exact_lambda_p_min"].iloc[0] == pytest.approx(0.5 * 2 / 16 + 0.5 * 2 / 24)


def test_non_isotropic_families():
    nonuni = widgets.projector_eigen_frame("nonuniform_coordinate", m=8, n=10, r=2, samples=4000)
    left = nonuni[nonuni.side == "left"]
    pi = sorted(float(v) for v in widgets.nonuniform_marginals(8, 2))
    assert sum(widgets.nonuniform_marginals(8, 2)) == 2 and max(pi) <= 1
    assert np.allclose(left["exact"], pi)  # E[H] = diag(π)
    assert (abs(left["eigenvalue"] - left["exact"]) <= 6 * left["tolerance"]).all()
    aniso = widgets.projector_eigen_frame("anisotropic_gaussian", m=8, n=10, r=2, samples=500)
    assert aniso["exact"].isna().all() and math.isnan(aniso["exact_lambda_p_min"].iloc[0])
    assert aniso["lambda_min"].iloc[0] < 2 / 8 < aniso["lambda_max"].iloc[0]


def test_charts():
    frame = widgets.projector_eigen_frame(samples=200)
    chart = widgets.projector_eigen_chart(frame)
    assert isinstance(chart, alt.VConcatChart) and len(chart.vconcat) == 2
    chart.to_dict()
    c = curve("rac_lora.theorem_e.3", seeds=2)
    spec = widgets.theorem_curve_chart(c, "rac_lora.theorem_e.3").to_dict()
    assert "printed bound (erratum)" in str(spec)
    # Theorem 22's forms share the bound: no printed line is drawn.
    c22 = curve("bernoulli_lora.theorem_22", seeds=2)
    chart22 = widgets.theorem_curve_chart(c22, get_theorem("bernoulli_lora.theorem_22"))
    series = set(chart22.layer[2].data["series"])
    assert series == {"measured (mean ± SE)", "corrected bound"}


def test_theory_constants_app_builds_and_redraws():
    app = widgets.theory_constants_app()
    assert len(app.charts) == 2 and all(out.outputs for out in app.outputs)
    assert isinstance(app.charts[0], alt.VConcatChart)
    assert "λᵖ_min" in app.status.value and "Erratum" in app.status.value
    assert set(app.frames) == {"eigen", "curve"}
    app.controls["theorem"].value = "bernoulli_lora.theorem_5"
    assert "Theorem 5" in app.status.value and app.frames["curve"].attrs["key"].endswith("_5")
    app.controls["sketch"].value = "nonuniform_coordinate"
    assert app.frame.attrs["sketch"] == "nonuniform_coordinate"
    app.controls["step_factor"].value = 3.0
    assert "only for T" in app.status.value or "violates" in app.status.value
    app.controls["theorem"].value = "bernoulli_lora.theorem_10_polyak_step"
    assert "Polyak step (no step factor" in app.status.value
    app.controls["r"].value = 16
    app.controls["m"].value = 8  # r > m: the error is shown, the charts stay
    assert "r must be in" in app.status.value


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"r": 20, "m": 16, "n": 24}, "r"),
        ({"r": 30}, "r"),
        ({"samples": 1}, "samples"),
        ({"sketch": "fixed"}, "sketch"),
        ({"p": 1.5}, "p"),
        ({"m": 0}, "m"),
    ],
)
def test_bad_input_names_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name} must"):
        widgets.projector_eigen_frame(**kwargs)
    with pytest.raises(ValueError, match=rf"^{name} must"):
        widgets.theory_constants_app(**kwargs)


def test_app_rejects_unknown_theorem():
    with pytest.raises(ValueError, match=r"^theorem must"):
        widgets.theory_constants_app(theorem="rac_lora.theorem_9.9")
    with pytest.raises(ValueError, match="key"):
        widgets.theorem_curve_chart(curve("rac_lora.theorem_5.3", seeds=2), "no.such")
