"""Notebook 03's app in words (issue 12 §4): readable dropdowns, a verify table without NaN,
titled axes, the bounds' quantity in words and a diverged run marked."""

import math
import re

import numpy as np
import pandas as pd
import pytest

from lorakit import widgets
from lorakit.theory import get_theorem
from lorakit.theory.scenarios import SCENARIOS, curve
from lorakit.widgets import theory as th


def test_theorem_dropdown_shows_labels_and_keeps_the_keys():
    app = widgets.theory_constants_app()
    options = app.controls["theorem"].options
    assert [value for _, value in options] == list(SCENARIOS)
    for label, key in options:
        thm = get_theorem(key)
        assert label.startswith(f"{thm.paper} {thm.number} · {thm.setting}: ")
        assert "." not in label.split(":")[-1] and "_" not in label  # no internal key shown
        assert label.endswith("(erratum)") == bool(thm.erratum)
    label = dict((v, k) for k, v in options)["rac_lora.theorem_e.3"]
    assert label == "RAC-LoRA Theorem E.3 · SGD (right sketch), PL: linear rate of f − f* (erratum)"
    sketches = dict(app.controls["sketch"].options)
    assert set(sketches.values()) == set(th.THEORY_SKETCHES)
    assert sketches["Haar (random orthonormal)"] == "haar"
    app.controls["theorem"].value = "bernoulli_lora.theorem_5"  # values stay the keys
    assert app.frames["curve"].attrs["key"] == "bernoulli_lora.theorem_5"


def test_verify_table_has_no_nan():
    raw = pd.DataFrame(
        {
            "paper": ["RAC-LoRA", "RAC-LoRA"],
            "claim": ["Theorem 5.3: GD, non-convex", "Theorem E.3: SGD (right sketch), PL"],
            "measured": [2.277949, 0.183847],
            "stderr": [0.103058, 0.013921],
            "relation": ["<=", "<="],
            "bound": [3.864283, 0.25],
            "printed_bound": [math.nan, 5.28361e-11],
            "status": ["holds", "printed form violated but corrected holds"],
        }
    )
    table = th.theorem_table(raw)
    assert list(table.columns) == [
        "theorem",
        "measured ± SE",
        "relation",
        "corrected bound",
        "printed bound",
        "status",
    ]
    assert not table.isna().any().any()
    assert not table.apply(lambda col: col.str.contains("nan", case=False)).any().any()
    assert table.loc[0, "printed bound"] == "—"
    assert table.loc[1, "printed bound"] == "5.284e-11"
    assert table.loc[0, "measured ± SE"] == "2.278 ± 0.1"
    assert table.loc[0, "theorem"] == "RAC-LoRA Theorem 5.3: GD, non-convex"
    with pytest.raises(ValueError, match="table"):
        th.theorem_table(raw.drop(columns="printed_bound"))


def test_histogram_count_axis_is_titled():
    spec = widgets.projector_eigen_chart(widgets.projector_eigen_frame(samples=200)).to_dict()
    for panel in spec["vconcat"]:
        y = panel["layer"][0]["encoding"]["y"]
        assert y["title"] == "number of eigenvalues in the bin"
        assert y["axis"]["tickMinStep"] == 1
    assert "Left sketch B" in str(spec) and "Gaussian: eigenvalues of E[H]" in str(spec)


@pytest.mark.parametrize("key", list(SCENARIOS))
def test_quantity_in_words_has_no_raw_notation(key):
    short, phrase = th.theorem_quantity(key)
    for text in (short, phrase):
        assert not re.search(r"\^|_\{|[{}]|W̃|W̄", text), text
    assert "T" in phrase  # it says at which T


def test_curve_subtitle_in_words_and_divergence_marked():
    c = curve("rac_lora.theorem_e.3", 5.0, seeds=2)  # γ = 5 × 0.5: every seed diverges
    assert c.attrs["diverged"]
    chart = th.theorem_curve_chart(c, "rac_lora.theorem_e.3")
    spec = chart.to_dict()
    subtitle = spec["title"]["subtitle"]
    assert subtitle[0].startswith("The expected gap f − f* after T steps")
    assert "2 of 2 seeds diverged" in subtitle[1]
    rule = spec["layer"][-1]
    first_nan = float(c["T"][np.isnan(c["measured"])].min())
    assert rule["mark"]["type"] == "rule" and chart.layer[-1].data["T"].iloc[0] == first_nan
    ok = th.theorem_curve_chart(curve("rac_lora.theorem_e.3", seeds=2), "rac_lora.theorem_e.3")
    assert ok.to_dict()["layer"][-1]["mark"]["type"] != "rule"  # no mark without divergence
    status = th._constants_status(
        widgets.projector_eigen_frame(samples=50), c, "rac_lora.theorem_e.3", False
    )
    assert "2 of 2 seeds diverged" in status
