"""Theory as data: the papers' theorems as sympy objects, their constants, and checks.

``THEOREMS`` maps a key such as ``rac_lora.theorem_5.5`` to a :class:`Theorem` with the printed
and corrected forms; :mod:`lorakit.theory.checks` runs each against a measured run.
"""

from . import bernoulli_lora  # noqa: F401, I001
from . import rac_lora  # noqa: F401  (registers the theorems)
from .theorem import THEOREMS, Form, Theorem, get_theorem
from .constants import (
    LambdaRange,
    LayerwiseLambda,
    ProjectorEstimate,
    anisotropic_gaussian,
    exact_expected_projector,
    expected_projector,
    lambda_p,
    mlp_layers_lambda,
    multilayer_lambda,
)
from .identities import IDENTITIES, verify_all

__all__ = [
    "IDENTITIES",
    "THEOREMS",
    "Form",
    "LambdaRange",
    "LayerwiseLambda",
    "ProjectorEstimate",
    "Theorem",
    "anisotropic_gaussian",
    "exact_expected_projector",
    "expected_projector",
    "get_theorem",
    "lambda_p",
    "mlp_layers_lambda",
    "multilayer_lambda",
    "verify_all",
]
