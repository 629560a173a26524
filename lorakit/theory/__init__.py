"""Theory as data: the papers' theorems as sympy objects, their constants, and checks.

``THEOREMS`` maps a key such as ``rac_lora.theorem_5.5`` to a :class:`Theorem` with the printed
and corrected forms; :mod:`lorakit.theory.checks` runs each against a measured run.
"""

from . import async_fl, bernoulli_lora, fslora, rac_lora, rw_lora  # noqa: F401  (register the theorems)
from .constants import (
    LambdaRange,
    LayerwiseLambda,
    ProjectorEstimate,
    exact_expected_projector,
    expected_projector,
    lambda_p,
    mlp_layers_lambda,
    multilayer_lambda,
)
from .identities import IDENTITIES, verify_all
from .theorem import THEOREMS, Form, Theorem, get_theorem

__all__ = [
    "IDENTITIES",
    "THEOREMS",
    "Form",
    "LambdaRange",
    "LayerwiseLambda",
    "ProjectorEstimate",
    "Theorem",
    "exact_expected_projector",
    "expected_projector",
    "get_theorem",
    "lambda_p",
    "mlp_layers_lambda",
    "multilayer_lambda",
    "verify_all",
]
