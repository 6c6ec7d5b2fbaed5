"""The kops estimators inside scikit-learn: model selection, pipelines, scorers, feature names,
sample weights, warm start, persistence and the errors users meet."""
import io
import pickle

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone, is_classifier
from sklearn.calibration import CalibratedClassifierCV
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import kops


def _classification(n=120, d=2, classes=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    score = X[:, 0] + 0.5 * np.sin(X[:, 1])
    edges = np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1])
    return X, np.digitize(score, edges)


def _regression(n=150, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, size=(n, d))
    return X, np.sin(X[:, 0]) + 0.5 * X[:, 1] ** 2


CLASSIFIERS = [
    lambda: kops.EigenPro2Classifier("gaussian", 1.5, ridge=1.0, epochs=3, random_state=0),
    lambda: kops.EigenPro4Classifier("laplacian", 2.0, centers=40, epochs=3, random_state=0),
    lambda: kops.ExactKernelRidgeClassifier("gaussian", 1.5, ridge=1e-3),
    lambda: kops.FalkonClassifier("gaussian", 1.5, centers=40, ridge=1e-3, random_state=0),
]
IDS = ["EigenPro2", "EigenPro4", "Exact", "Falkon"]


@pytest.mark.parametrize("make", CLASSIFIERS, ids=IDS)
def test_binary_decision_function_is_1d_and_roc_auc_scores(make):
    X, y = _classification()
    model = make().fit(X, y)
    assert is_classifier(model)
    dec = model.decision_function(X)
    assert dec.shape == (len(X),) and dec.dtype == np.float64
    np.testing.assert_array_equal(model.classes_[(dec > 0).astype(int)], model.predict(X))
    auc = cross_val_score(make(), X, y, cv=3, scoring="roc_auc")
    assert auc.min() > 0.8
    assert not hasattr(model, "predict_proba")  # least-squares outputs are not probabilities


def test_multiclass_decision_function_and_tensor_input_keep_their_shapes():
    X, y = _classification(classes=3)
    model = kops.FalkonClassifier("gaussian", 1.5, centers=40, random_state=0).fit(X, y)
    assert model.decision_function(X).shape == (len(X), 3)
    out = model.decision_function(torch.from_numpy(X))
    assert isinstance(out, torch.Tensor) and out.shape == (len(X), 3)
    # the generic class with task="auto" detects classification and keeps its old outputs
    generic = kops.Falkon("gaussian", 1.5, centers=40, random_state=0).fit(X, y)
    np.testing.assert_allclose(generic.decision_function(X), model.decision_function(X), rtol=1e-6)


def test_calibrated_probabilities_through_calibrated_classifier_cv():
    X, y = _classification(n=150)
    cal = CalibratedClassifierCV(kops.FalkonClassifier("gaussian", 1.5, centers=40, random_state=0), cv=3)
    proba = cal.fit(X, y).predict_proba(X)
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert (proba.argmax(1) == y).mean() > 0.85


def test_cross_val_score_uses_stratified_folds_for_classifiers():
    X, y = _classification(classes=3)
    order = np.argsort(y, kind="stable")  # sorted labels: plain KFold would leave classes out
    X, y = X[order], y[order]
    scores = cross_val_score(kops.EigenPro2Classifier("gaussian", 1.5, ridge=1.0, epochs=3, random_state=0), X, y, cv=3)
    want = cross_val_score(kops.EigenPro2Classifier("gaussian", 1.5, ridge=1.0, epochs=3, random_state=0), X, y,
                           cv=StratifiedKFold(3))
    np.testing.assert_allclose(scores, want)
    assert scores.min() > 0.6


def test_grid_search_over_bandwidth_in_a_pipeline():
    X, y = _regression()
    pipe = make_pipeline(StandardScaler(), kops.FalkonRegressor("gaussian", 1.0, centers=60, random_state=0))
    grid = GridSearchCV(pipe, {"falkonregressor__bandwidth": [0.01, 1.0]}, cv=3).fit(X, y)
    assert grid.best_params_["falkonregressor__bandwidth"] == 1.0
    assert grid.score(X, y) > 0.9


@pytest.mark.parametrize("make", CLASSIFIERS, ids=IDS)
def test_clone_pickle_joblib_and_torch_save_round_trips(make, tmp_path):
    X, y = _classification(classes=3)
    model = make().fit(X, y)
    assert clone(model).get_params() == model.get_params()
    want = model.decision_function(X)
    for restored in (pickle.loads(pickle.dumps(model)),):
        np.testing.assert_array_equal(restored.decision_function(X), want)
    joblib.dump(model, tmp_path / "m.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "m.joblib").decision_function(X), want)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    np.testing.assert_array_equal(torch.load(buf, weights_only=False).decision_function(X), want)


def test_feature_names_and_reordered_columns():
    pd = pytest.importorskip("pandas")
    X, y = _regression()
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    model = kops.FalkonRegressor("gaussian", 1.0, centers=60, random_state=0).fit(df, y)
    np.testing.assert_array_equal(model.feature_names_in_, ["a", "b", "c"])
    np.testing.assert_allclose(model.predict(df), model.predict(X))
    with pytest.raises(ValueError, match="feature names should match those that were passed during fit"):
        model.predict(df[["b", "a", "c"]])
    model.fit(X, y)  # refitting on an array forgets the names
    assert not hasattr(model, "feature_names_in_")
    model.fit(df, y).fit(torch.from_numpy(X), torch.from_numpy(y))
    assert not hasattr(model, "feature_names_in_")


def test_sparse_input_is_refused_with_sklearns_error():
    scipy_sparse = pytest.importorskip("scipy.sparse")
    X, y = _regression()
    with pytest.raises(TypeError, match="Sparse data was passed"):
        kops.EigenPro2Regressor(epochs=1).fit(scipy_sparse.csr_matrix(X), y)
    model = kops.FalkonRegressor(centers=20, random_state=0).fit(X, y)
    with pytest.raises(TypeError, match="Sparse data was passed"):
        model.predict(scipy_sparse.csr_matrix(X))


def test_not_fitted_error_is_sklearns():
    assert issubclass(kops.NotFittedError, SklearnNotFittedError)
    for model in (kops.Falkon(), kops.EigenPro4Regressor(), kops.ExactKernelRidgeClassifier()):
        with pytest.raises(SklearnNotFittedError):
            model.predict(np.zeros((2, 3)))
        with pytest.raises(kops.NotFittedError):
            model.predict(np.zeros((2, 3)))


def test_fixed_task_classes_store_their_arguments_only():
    model = kops.EigenPro4Classifier("gaussian", 2.0, centers=30, epochs=1)
    params = model.get_params()
    assert "task" not in params and params["centers"] == 30 and params["kernel"] == "gaussian"
    assert vars(model).keys() == params.keys()
    with pytest.raises(TypeError):
        kops.EigenPro4Classifier(task="regression")


# ------------------------------------------------------------------------------- sample weights
def _weights(n, seed=1):
    rng = np.random.default_rng(seed)
    w = rng.integers(0, 4, size=n).astype(float)  # zeros included: those rows drop out
    w[:3] = [1.0, 2.0, 3.0]
    return w


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-6), ("float32", 1e-3)])
@pytest.mark.parametrize("ridge", [1e-6, 1.0])
def test_falkon_sample_weight_is_the_exact_weighted_model_and_repeated_rows(dtype, tol, ridge):
    X, y = _regression()
    Z = X[:40]
    w = _weights(len(X))
    # the weighted normal equations (K_ZX W K_XZ + r K_ZZ) alpha = K_ZX W y, in float64
    Kxz = kops.kernel_matrix(torch.from_numpy(X), torch.from_numpy(Z), "gaussian", 1.0).numpy()
    Kzz = kops.kernel_matrix(torch.from_numpy(Z), torch.from_numpy(Z), "gaussian", 1.0).numpy()
    alpha = np.linalg.solve(Kxz.T @ (w[:, None] * Kxz) + ridge * Kzz, Kxz.T @ (w * y))
    want = Kxz @ alpha
    kw = dict(centers=Z, ridge=ridge, max_iter=60, tol=1e-12, dtype=dtype)
    fit = kops.FalkonRegressor("gaussian", 1.0, **kw).fit(X, y, sample_weight=w).predict(X)
    assert np.linalg.norm(fit - want) / np.linalg.norm(want) < tol
    repeat = np.repeat(np.arange(len(X)), w.astype(int))
    rep = kops.FalkonRegressor("gaussian", 1.0, **kw).fit(X[repeat], y[repeat]).predict(X)
    assert np.linalg.norm(fit - rep) / np.linalg.norm(want) < tol
    exact = kops.ExactKernelRidgeRegressor("gaussian", 1.0, centers=Z, ridge=ridge).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(exact.predict(X), want, rtol=1e-6, atol=1e-8)


def test_exact_sample_weight_without_centers_matches_repeated_rows():
    X, y = _regression(n=60)
    w = _weights(len(X))
    repeat = np.repeat(np.arange(len(X)), w.astype(int))
    weighted = kops.ExactKernelRidgeRegressor("laplacian", 1.0, ridge=0.3).fit(X, y, sample_weight=w)
    repeated = kops.ExactKernelRidgeRegressor("laplacian", 1.0, ridge=0.3).fit(X[repeat], y[repeat])
    np.testing.assert_allclose(weighted.predict(X), repeated.predict(X), rtol=1e-8, atol=1e-10)
    assert weighted.centers_.shape[0] == int((w > 0).sum())


def test_equal_sample_weights_rescale_the_ridge_in_eigenpro():
    # unequal weights: tests/test_solvers_weights.py
    X, y = _regression()
    kw = dict(kernel="gaussian", bandwidth=1.0, ridge=2.0, epochs=2, random_state=0)
    a = kops.EigenPro2Regressor(**kw).fit(X, y, sample_weight=np.full(len(X), 4.0)).predict(X)
    b = kops.EigenPro2Regressor(**dict(kw, ridge=0.5)).fit(X, y).predict(X)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bad,match", [(-1.0, "non-negative"), (np.nan, "NaN"), (0.0, "positive")])
def test_bad_sample_weight_names_the_argument(bad, match):
    X, y = _regression(n=30)
    w = np.ones(len(X))
    w[:] = 0.0 if bad == 0.0 else 1.0
    w[0] = bad
    with pytest.raises(ValueError, match=match):
        kops.FalkonRegressor(centers=10).fit(torch.from_numpy(X), torch.from_numpy(y),
                                             sample_weight=torch.from_numpy(w))
    with pytest.raises(ValueError, match="sample_weight"):
        kops.FalkonRegressor(centers=10).fit(X, y, sample_weight=np.ones(len(X) - 1))


# ---------------------------------------------------------------------------------- warm start
def test_falkon_warm_start_continues_from_the_previous_weights():
    X, y = _regression()
    Z = X[:50]
    exact = kops.ExactKernelRidgeRegressor("gaussian", 1.0, centers=Z, ridge=1e-4).fit(X, y).predict(X)
    model = kops.FalkonRegressor("gaussian", 1.0, centers=Z, ridge=1e-4, max_iter=3, tol=0.0, dtype="float64",
                                 warm_start=True)
    errors = []
    for _ in range(4):
        errors.append(np.linalg.norm(model.fit(X, y).predict(X) - exact))
    assert errors[-1] < 0.5 * errors[0]
    cold = kops.FalkonRegressor("gaussian", 1.0, centers=Z, ridge=1e-4, max_iter=3, tol=0.0, dtype="float64")
    assert np.linalg.norm(cold.fit(X, y).predict(X) - exact) == pytest.approx(errors[0], rel=1e-6)
    with pytest.raises(ValueError, match="warm_start"):
        model.fit(X[:, :2], y)


@pytest.mark.parametrize("cls", [kops.EigenPro3Regressor, kops.EigenPro4Regressor, kops.EigenPro2Regressor])
def test_eigenpro_warm_start_continues_training(cls):
    X, y = _regression()
    kw = dict(kernel="laplacian", bandwidth=2.0, ridge=1e-2, epochs=1, dtype="float64", random_state=0)
    if cls is not kops.EigenPro2Regressor:
        kw["centers"] = X[:50]
    exact = kops.ExactKernelRidgeRegressor("laplacian", 2.0, ridge=1e-2,
                                           centers=kw.get("centers")).fit(X, y).predict(X)
    model = cls(warm_start=True, **kw)
    errors = [np.linalg.norm(model.fit(X, y).predict(X) - exact) for _ in range(4)]
    assert errors[-1] < 0.5 * errors[0], errors
    if cls is kops.EigenPro2Regressor:
        with pytest.raises(ValueError, match="warm_start: EigenPro2's centers are its training points"):
            model.fit(X[:-1], y[:-1])
    with pytest.raises(ValueError, match="warm_start"):
        model.fit(X[:, :2], y)
