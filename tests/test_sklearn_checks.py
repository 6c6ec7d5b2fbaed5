"""scikit-learn's estimator checks on every kops regressor and classifier.

Each estimator runs ``parametrize_with_checks`` with small settings that the checks keep
(they clone the estimator): a fixed bandwidth (the default, the median distance of the rows,
would change when the checks repeat or drop rows), 2 epochs, 8 damped eigendirections, 5
conjugate gradient iterations. The checks that fail for a documented reason are declared
through scikit-learn's own mechanism (``expected_failed_checks``; strict, so a check that
starts passing must be removed from the list):

* ``check_sample_weight_equivalence_on_dense_data``, ``check_sample_weights_not_overwritten``
  (EigenPro 2 / 3 / 4): these solvers take only equal weights (an equal weight ``w`` is the
  ridge ``r / w``, exact) and refuse unequal ones with a ValueError; their per-row gradient
  scaling is not implemented.
* ``check_sample_weight_equivalence_on_dense_data`` (Falkon): the centers are a sample of the
  rows given, so repeating or dropping rows changes the centers and hence the model; with
  the same centers, weights are repetitions (``tests/test_sklearn_api.py``).
* ``check_sample_weight_equivalence_on_dense_data`` (ExactKernelRidge classifier): repeated
  rows make ``K(X, X)`` singular, and its Cholesky jitter moves the one-vs-all outputs by
  about 1e-8, above the check's absolute tolerance of 1e-9 (the regressor passes).
"""
import warnings

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

import kops

FAST = {"bandwidth": 1.0, "random_state": 0}
EIGENPRO = dict(FAST, epochs=2, n_components=8)

ESTIMATORS = [
    kops.EigenPro2Regressor(**EIGENPRO),
    kops.EigenPro2Classifier(**EIGENPRO),
    kops.EigenPro3Regressor(**EIGENPRO),
    kops.EigenPro3Classifier(**EIGENPRO),
    kops.EigenPro4Regressor(**EIGENPRO),
    kops.EigenPro4Classifier(**EIGENPRO),
    kops.ExactKernelRidgeRegressor(**FAST),
    kops.ExactKernelRidgeClassifier(**FAST),
    kops.FalkonRegressor(**FAST, max_iter=5),
    kops.FalkonClassifier(**FAST, max_iter=5),
]

UNEQUAL_WEIGHTS = ("EigenPro 2 / 3 / 4 take only equal sample weights (a rescaled ridge) and refuse "
                   "unequal ones with a ValueError")


def expected_failed_checks(estimator):
    """The checks each estimator is known to fail, with the reason (module docstring)."""
    if isinstance(estimator, (kops.EigenPro2, kops.EigenPro3, kops.EigenPro4)):
        return {"check_sample_weight_equivalence_on_dense_data": UNEQUAL_WEIGHTS,
                "check_sample_weights_not_overwritten": UNEQUAL_WEIGHTS}
    if isinstance(estimator, kops.Falkon):
        return {"check_sample_weight_equivalence_on_dense_data":
                "the centers are sampled from the rows given: repeating rows changes the centers"}
    if isinstance(estimator, kops.ExactKernelRidgeClassifier):
        return {"check_sample_weight_equivalence_on_dense_data":
                "repeated rows make K(X, X) singular; its jitter moves outputs by 1e-8 > atol 1e-9"}
    return {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks, xfail_strict=True)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # clipped n_nystrom / batch_size on tiny data
        check(estimator)


@pytest.mark.parametrize("cls", [kops.EigenPro2, kops.EigenPro3, kops.EigenPro4, kops.ExactKernelRidge,
                                 kops.Falkon])
def test_solver_classes_declare_the_type_of_their_task(cls):
    from sklearn.base import is_classifier, is_regressor

    assert is_classifier(cls(task="classification")) and not is_regressor(cls(task="classification"))
    assert is_regressor(cls(task="regression")) and not is_classifier(cls(task="regression"))
    assert not is_classifier(cls()) and not is_regressor(cls())  # "auto": decided by the labels at fit
