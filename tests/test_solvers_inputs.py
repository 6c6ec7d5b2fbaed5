"""Bad input to the solvers: clear errors naming the argument, or documented behaviour."""
import warnings

import numpy as np
import pytest
import torch

import kops

SOLVERS = [kops.EigenPro2, kops.EigenPro3, kops.EigenPro4, kops.ExactKernelRidge, kops.Falkon]


def _data(n=60, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.integers(0, 3, size=n)


def _make(cls, **kw):
    if cls in (kops.EigenPro3, kops.EigenPro4):
        kw.setdefault("centers", 20)
    if cls is kops.Falkon:
        kw.setdefault("max_iter", 2)
    elif cls is not kops.ExactKernelRidge:
        kw.setdefault("epochs", 1)
    return cls("gaussian", 1.5, random_state=0, **kw)


# Array-likes go through scikit-learn's validation (its messages, which name X / y where it
# can); tensors through kops's own, which always name the argument.
MESSAGES = {
    "2d": {"numpy": "Expected 2D array, got 1D array", "tensor": "X must be 2-D"},
    "empty": {"numpy": "Found array with 0 sample", "tensor": "X is empty"},
    "nan": {"numpy": "Input X contains NaN", "tensor": "X contains NaN"},
    "inf": {"numpy": "Input X contains infinity", "tensor": "X contains NaN or infinity"},
    "rows": {"numpy": "inconsistent numbers of samples: \\[60, 59\\]", "tensor": "y has 59 rows"},
    "y_nan": {"numpy": "Input y contains NaN", "tensor": "y contains NaN"},
    "y_2d": {"numpy": "y should be a 1d array", "tensor": "y must be 1-D"},
    "features": {"numpy": "X has 2 features, but \\w+ is expecting 3 features", "tensor": "X has 2 features"},
}


@pytest.mark.parametrize("kind", ["numpy", "tensor"])
@pytest.mark.parametrize("cls", SOLVERS)
def test_bad_X_and_y(cls, kind):
    X, y = _data()
    if kind == "tensor":
        X, y = torch.from_numpy(X), torch.from_numpy(y)
    msg = {key: value[kind] for key, value in MESSAGES.items()}
    with pytest.raises(ValueError, match=msg["2d"]):
        _make(cls).fit(X[:, 0], y)
    with pytest.raises(ValueError, match=msg["empty"]):
        _make(cls).fit(X[:0], y[:0])
    bad = X.clone() if kind == "tensor" else X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=msg["nan"]):
        _make(cls).fit(bad, y)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match=msg["inf"]):
        _make(cls).fit(bad, y)
    with pytest.raises(ValueError, match=msg["rows"]):
        _make(cls).fit(X, y[:-1])
    with pytest.raises(ValueError, match="single class"):
        _make(cls).fit(X, y * 0)
    yf = y.astype(float) if kind == "numpy" else y.double()
    yf[0] = np.nan
    with pytest.raises(ValueError, match=msg["y_nan"]):
        _make(cls).fit(X, yf)
    stacked = np.stack([y, y], 1) if kind == "numpy" else torch.stack([y, y], 1)
    with pytest.raises(ValueError, match=msg["y_2d"]):
        _make(cls, task="classification").fit(X, stacked)
    with pytest.raises(ValueError, match="task"):
        _make(cls, task="ranking").fit(X, y)
    model = _make(cls).fit(X, y)
    with pytest.raises(ValueError, match=msg["features"]):
        model.predict(X[:, :2])
    with pytest.raises(ValueError, match="NotFitted|not fitted"):
        _make(cls).predict(X)


@pytest.mark.parametrize("cls", [kops.EigenPro2, kops.EigenPro3, kops.EigenPro4])
def test_nystrom_and_components(cls):
    X, y = _data()
    with pytest.warns(UserWarning, match="n_nystrom"):
        _make(cls, n_nystrom=10_000).fit(X, y)
    with pytest.raises(ValueError, match="n_components"):
        _make(cls, n_nystrom=10, n_components=10).fit(X, y)
    with pytest.raises(ValueError, match="epochs"):
        _make(cls, epochs=-1).fit(X, y)
    with pytest.raises(ValueError, match="ridge"):
        _make(cls, ridge=-1.0).fit(X, y)
    with pytest.warns(UserWarning, match="batch_size"):
        _make(cls, batch_size=1000).fit(X, y)


@pytest.mark.parametrize("cls", [kops.EigenPro3, kops.EigenPro4, kops.ExactKernelRidge])
def test_centers(cls):
    X, y = _data()
    with pytest.raises(ValueError, match="centers=100 is larger"):
        _make(cls, centers=100).fit(X, y)
    with pytest.raises(ValueError, match="centers has 2 features"):
        _make(cls, centers=X[:10, :2]).fit(X, y)
    with pytest.raises(ValueError, match="centers must"):
        _make(cls, centers=1).fit(X, y)
    model = _make(cls, centers=torch.as_tensor(X[:15])).fit(X, y)
    assert model.centers_.shape == (15, 3)


def test_kernel_arguments():
    X, y = _data()
    with pytest.raises(ValueError, match="unknown kernel"):
        kops.EigenPro2("cosine", 1.0, epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="bandwidth"):
        kops.EigenPro2("gaussian", -1.0, epochs=1).fit(X, y)
    # An object carries its bandwidth; a name without one takes the median distance.
    kops.EigenPro2(kops.Laplacian(2.0), epochs=1, random_state=0).fit(X, y)
    m = kops.EigenPro2("gaussian", epochs=1, random_state=0).fit(X, y)
    assert m.kernel_.bandwidth > 0


def test_one_dimensional_regression_target_and_string_labels():
    X, y = _data()
    m = kops.EigenPro2("gaussian", 1.5, epochs=1, random_state=0).fit(X, y.astype(float))
    assert m.predict(X).shape == (len(X),)
    assert not hasattr(m, "classes_") or m.classes_ is None
    labels = np.array(["a", "b", "c"])[y]
    m = kops.EigenPro4("gaussian", 1.5, centers=20, epochs=1, random_state=0).fit(X, labels)
    assert set(m.predict(X)) <= {"a", "b", "c"}
    assert 0 <= m.score(X, labels) <= 1


def test_import_does_not_need_sklearn_estimators_module():
    # get_params / set_params exist either way (sklearn's BaseEstimator or the fallback).
    m = kops.EigenPro4()
    assert set(m.get_params()) >= {"kernel", "bandwidth", "centers", "epochs", "batch_size", "random_state"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        repr(m)
