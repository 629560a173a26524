"""Theorem checks: run the matching method on a problem with known constants and put the measured
left-hand side beside the corrected bound (and the printed one where an erratum changes it).

Each check is registered in :data:`lorakit.theory.registry.CHECKS` (``lorakit.checks.CHECKS``)
under its theorem's key, so ``lorakit verify`` lists it; importing this module registers the
per-paper modules' checks too, in the order ``lorakit verify`` prints. Measurements
(:mod:`lorakit.theory.measure`) are means over seeds with their standard errors.
"""

from __future__ import annotations

from . import rac_lora  # noqa: F401  (registers the theorems)
from .identities import IDENTITIES
from .measure import register_theorem_check
from .registry import Result, register
from .scenarios import scenario_result

__all__: list[str] = []  # the checks register themselves in lorakit.theory.registry.CHECKS


# --------------------------------------------------------------------------------------------
# RAC-LoRA (spec rac_lora.md §4–5); the runs are defined in lorakit.theory.scenarios
# --------------------------------------------------------------------------------------------
@register_theorem_check("rac_lora.theorem_5.3")
def _rac_5_3(fast: bool) -> Result:
    """Smooth non-convex Σφ(W − C), φ(x) = x²/(1+x²): L = 2, f* = 0 (spec §5 item 6)."""
    return scenario_result("rac_lora.theorem_5.3", fast)


@register_theorem_check("rac_lora.theorem_5.5")
def _rac_5_5(fast: bool) -> Result:
    """Tight case: ½‖W − W*‖² at γ = 1/L, E f(W^T) = (1 − r/m)^T Δ^0 exactly (spec §5 item 4)."""
    return scenario_result("rac_lora.theorem_5.5", fast)


@register_theorem_check("rac_lora.theorem_e.2")
def _rac_e2(fast: bool) -> Result:
    """Additive noise of variance σ²: (A_1, B_1, C_1) = (0, 1, σ²) (spec §5 item 9)."""
    return scenario_result("rac_lora.theorem_e.2", fast)


@register_theorem_check("rac_lora.theorem_e.3")
def _rac_e3(fast: bool) -> Result:
    """After many steps the noise floor γLσ²/(2μ) remains: the printed bound (no floor) fails."""
    return scenario_result("rac_lora.theorem_e.3", fast)


@register_theorem_check("rac_lora.theorem_d.2")
def _rac_d2(fast: bool) -> Result:
    """One reshuffled epoch per link (Corollary D.2.1 is σ² = 0)."""
    return scenario_result("rac_lora.theorem_d.2", fast)


@register_theorem_check("rac_lora.theorem_d.3")
def _rac_d3(fast: bool) -> Result:
    """μ = L = 1/4 makes the missing 1/μ a factor of 4 in the neighbourhood."""
    return scenario_result("rac_lora.theorem_d.3", fast)


from . import checks_bernoulli  # noqa: E402, F401


# --------------------------------------------------------------------------------------------
# The algebraic facts the proofs rely on, proved symbolically (lorakit.theory.identities)
# --------------------------------------------------------------------------------------------
def _register_identity(name: str, statement: str, source: str, prove) -> None:
    def check(fast: bool) -> Result:
        return Result(0.0 if prove() else 1.0, 0.0, "==", f"sympy proof; {source}")

    register(f"identity.{name}", source.split(" ")[0], statement)(check)


for _name, (_statement, _source, _prove) in IDENTITIES.items():
    _register_identity(_name, _statement, _source, _prove)
from . import checks_federated  # noqa: E402, F401

# isort: split
from . import checks_decentralized  # noqa: E402, F401

# isort: split
from . import checks_async  # noqa: E402, F401
