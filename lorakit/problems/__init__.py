"""Test problems: f(W) for a weight matrix W with the constants the theorems use.

Every problem is a :class:`MatrixProblem` (``loss``, ``grad``, ``L``, ``mu``, ``f_star``, ...):

=================== ============================== ===================================
name                constructor                    source
=================== ============================== ===================================
counterexample      :func:`counterexample`         RAC-LoRA Sec. 3, Eq. (2), Fig. 1
quadratic           :func:`quadratic`              RAC-LoRA spec §5 items 4, 7
linear_regression   :func:`linear_regression`      Bernoulli-LoRA Sec. 7.1, App. J.1
logistic_regression :func:`logistic_regression`    RAC-LoRA App. A.1, Fig. 3
frobenius_distance  :func:`frobenius_distance`     Bernoulli-LoRA Thm 10 (non-smooth)
l1_distance         :func:`l1_distance`            Bernoulli-LoRA Thm 10 (non-smooth)
smooth_nonconvex    :func:`smooth_nonconvex`       RAC-LoRA spec §5 item 6
digits_softmax      :func:`digits_softmax`         softmax regression, sklearn digits
=================== ============================== ===================================

Federated: :func:`heterogeneous_quadratics` (registered as ``heterogeneous_quadratics``) builds a
:class:`FederatedProblem` f = (1/M) Σ_l f_l (Bernoulli-LoRA eq. (4), Assumption 11; RAC-LoRA
Assumption F.1). :func:`federated_digits` (registered as ``federated_digits``) splits
scikit-learn's digits among clients (iid, Dirichlet label skew, quantity skew; FSLoRA spec §10
item 7) as a federated softmax regression. :func:`split` splits the rows of a finite-sum
problem (linear, logistic or softmax regression) among clients the same ways, as a
:class:`FederatedProblem` of clients of the same class.
"""

from __future__ import annotations

from .._validation import check_choice
from .base import MatrixProblem
from .federated import FederatedProblem, heterogeneous_quadratics
from .nonconvex import SmoothNonconvex, smooth_nonconvex
from .nonsmooth import DistanceProblem, frobenius_distance, l1_distance
from .quadratics import DiagonalQuadratic, counterexample, quadratic
from .regression import LinearRegression, LogisticRegression, linear_regression, logistic_regression
from .softmax import SoftmaxRegression, digits_softmax, federated_digits
from .split import split

__all__ = [
    "PROBLEMS",
    "DiagonalQuadratic",
    "DistanceProblem",
    "FederatedProblem",
    "LinearRegression",
    "LogisticRegression",
    "MatrixProblem",
    "SmoothNonconvex",
    "SoftmaxRegression",
    "counterexample",
    "digits_softmax",
    "federated_digits",
    "frobenius_distance",
    "heterogeneous_quadratics",
    "l1_distance",
    "linear_regression",
    "logistic_regression",
    "make_problem",
    "quadratic",
    "smooth_nonconvex",
    "split",
]

#: Problem name → constructor.
PROBLEMS = {
    "counterexample": counterexample,
    "quadratic": quadratic,
    "linear_regression": linear_regression,
    "logistic_regression": logistic_regression,
    "frobenius_distance": frobenius_distance,
    "l1_distance": l1_distance,
    "smooth_nonconvex": smooth_nonconvex,
    "heterogeneous_quadratics": heterogeneous_quadratics,
    "digits_softmax": digits_softmax,
    "federated_digits": federated_digits,
}


def make_problem(name: str, **kwargs) -> MatrixProblem:
    """Build the problem called ``name`` (a key of :data:`PROBLEMS`) with ``kwargs``.

    >>> make_problem("quadratic", m=4, n=3).L
    1.0
    """
    check_choice("name", name, PROBLEMS)
    return PROBLEMS[name](**kwargs)
