"""RidgeCV against himalaya's RidgeCV / KernelRidgeCV, numpy's closed form and sklearn's folds."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import r2_score as sklearn_r2
from sklearn.model_selection import KFold

from b2m.core import ridge as ridge_module
from b2m.core.ridge import RidgeCV, kfold_splits

himalaya_ridge = pytest.importorskip("himalaya.ridge")
himalaya_kernel_ridge = pytest.importorskip("himalaya.kernel_ridge")
himalaya_scoring = pytest.importorskip("himalaya.scoring")

ALPHAS = np.logspace(-2, 5, 15)


def make_data(n_samples, n_features, n_targets, seed=0):
    """X with an offset (so the intercept matters), targets from weak to strong signal
    so that different targets choose different alphas; plus a held-out X."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features)) + 3.0
    weights = rng.standard_normal((n_features, n_targets)) * np.logspace(-2, 0, n_targets)
    Y = X @ weights + 2.0 * rng.standard_normal((n_samples, n_targets)) + 1.0
    X_test = rng.standard_normal((15, n_features)) + 3.0
    return X, Y, X_test


def relative_error(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


def fit_himalaya(estimator_class, X, Y, cv, scoring):
    solver_params = {"score_func": himalaya_scoring.r2_score} if scoring == "r2" else None
    estimator = estimator_class(alphas=ALPHAS, fit_intercept=True, cv=cv, solver_params=solver_params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # himalaya's advice on which of its solvers is faster
        return estimator.fit(X, Y)


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("scoring", ["neg_mse", "r2"])
@pytest.mark.parametrize(
    "shape, himalaya_class, solver",
    [((60, 20, 8), "RidgeCV", "primal"), ((40, 100, 8), "KernelRidgeCV", "kernel")],
)
def test_matches_himalaya(shape, himalaya_class, solver, scoring, shuffle):
    X, Y, X_test = make_data(*shape)
    ours = RidgeCV(alphas=ALPHAS, dtype="float64", shuffle=shuffle, seed=3, scoring=scoring).fit(X, Y)
    estimator_class = getattr(himalaya_ridge if himalaya_class == "RidgeCV" else himalaya_kernel_ridge,
                              himalaya_class)
    # With cv=5 himalaya uses KFold(5); shuffled folds are handed over as a list.
    cv = kfold_splits(len(X), 5, shuffle=True, seed=3) if shuffle else 5
    reference = fit_himalaya(estimator_class, X, Y, cv, scoring)

    assert ours.solver_ == solver
    assert len(np.unique(ours.best_alphas_)) > 1  # the comparison covers several chosen alphas
    # himalaya returns exp(-log(1 / alpha)), equal to the grid value up to rounding.
    np.testing.assert_allclose(ours.best_alphas_, reference.best_alphas_, rtol=1e-9)
    # himalaya's best scores include its tie-break slope of 1e-10 * log(alpha).
    np.testing.assert_allclose(ours.cv_scores_.max(0), reference.cv_scores_, rtol=1e-8, atol=1e-8)
    assert relative_error(ours.predict(X_test), reference.predict(X_test)) <= 1e-4
    assert relative_error(ours.predict(X), reference.predict(X)) <= 1e-4


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("solver", ["primal", "kernel"])
def test_single_alpha_matches_closed_form(solver, fit_intercept):
    X, Y, X_test = make_data(30, 12, 4)
    alpha = 7.0
    model = RidgeCV(alphas=[alpha], dtype="float64", solver=solver, fit_intercept=fit_intercept).fit(X, Y)

    x_mean, y_mean = (X.mean(0), Y.mean(0)) if fit_intercept else (0.0, 0.0)
    Xc, Yc = X - x_mean, Y - y_mean
    coef = np.linalg.solve(Xc.T @ Xc + alpha * np.eye(X.shape[1]), Xc.T @ Yc)
    intercept = y_mean - x_mean @ coef if fit_intercept else np.zeros(Y.shape[1])

    np.testing.assert_allclose(model.coef_, coef, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(model.intercept_, intercept, rtol=1e-8, atol=1e-10)
    expected = (X_test @ coef + intercept).astype(np.float32)
    np.testing.assert_allclose(model.predict(X_test), expected, rtol=1e-5)
    assert model.best_alphas_.tolist() == [alpha] * 4


def test_kernel_and_primal_forms_agree():
    X, Y, X_test = make_data(50, 30, 6)
    primal = RidgeCV(alphas=ALPHAS, dtype="float64", solver="primal").fit(X, Y)
    kernel = RidgeCV(alphas=ALPHAS, dtype="float64", solver="kernel").fit(X, Y)
    np.testing.assert_array_equal(primal.best_alphas_, kernel.best_alphas_)
    np.testing.assert_allclose(primal.cv_scores_, kernel.cv_scores_, rtol=1e-8)
    np.testing.assert_allclose(primal.coef_, kernel.coef_, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_kernel_form_keeps_dual_weights(fit_intercept):
    X, Y, X_test = make_data(20, 60, 5)
    model = RidgeCV(alphas=ALPHAS, dtype="float64", solver="kernel", fit_intercept=fit_intercept).fit(X, Y)
    assert model.dual_coef_.shape == (20, 5) and model.X_fit_.shape == (20, 60)
    x_mean = X.mean(0) if fit_intercept else 0.0
    np.testing.assert_allclose(model.X_fit_, X - x_mean, rtol=1e-12)
    np.testing.assert_allclose(model.coef_, model.X_fit_.T @ model.dual_coef_, rtol=1e-10)
    np.testing.assert_allclose(model.predict(X_test), (X_test @ model.coef_ + model.intercept_).astype(np.float32),
                               rtol=1e-5)
    expected = model.predict(X_test)
    X[:] = 0.0  # the model holds its own copy of the training features, never the caller's array
    np.testing.assert_array_equal(model.predict(X_test), expected)

    primal = RidgeCV(alphas=ALPHAS, dtype="float64", solver="primal").fit(X_test, Y[:15])
    assert primal.dual_coef_ is None and primal.X_fit_ is None


def test_coef_before_fit_raises():
    with pytest.raises(AttributeError, match="RidgeCV is not fitted"):
        RidgeCV().coef_


def test_huge_finite_values_are_not_taken_for_infinite():
    # Their sum overflows float32; the finite check must not read that as an infinite input.
    X = np.full((4, 3), 3e38, dtype=np.float32)
    tensor = RidgeCV()._to_tensor(X, "X")
    assert tensor.shape == (4, 3) and bool(torch.isfinite(tensor).all())


@pytest.mark.parametrize("shape", [(60, 20, 8), (40, 100, 8)])
def test_float32_close_to_float64(shape):
    X, Y, X_test = make_data(*shape)
    single = RidgeCV(alphas=ALPHAS, dtype="float32").fit(X, Y)
    double = RidgeCV(alphas=ALPHAS, dtype="float64").fit(X, Y)
    assert single.coef_.dtype == np.float32 and double.coef_.dtype == np.float64
    np.testing.assert_array_equal(single.best_alphas_, double.best_alphas_)
    np.testing.assert_allclose(single.cv_scores_, double.cv_scores_, rtol=1e-3)
    assert relative_error(single.predict(X_test), double.predict(X_test)) <= 1e-4


def test_target_chunks_give_the_same_fit(monkeypatch):
    X, Y, X_test = make_data(40, 100, 8)
    whole = RidgeCV(alphas=ALPHAS, dtype="float64").fit(X, Y)
    monkeypatch.setattr(ridge_module, "_BLOCK_ELEMENTS", 3 * 40)  # 3 targets per chunk
    chunked = RidgeCV(alphas=ALPHAS, dtype="float64").fit(X, Y)
    np.testing.assert_array_equal(chunked.best_alphas_, whole.best_alphas_)
    np.testing.assert_allclose(chunked.cv_scores_, whole.cv_scores_, rtol=1e-12)
    np.testing.assert_allclose(chunked.coef_, whole.coef_, rtol=1e-10, atol=1e-12)


def test_shapes_torch_input_and_score():
    X, Y, X_test = make_data(40, 100, 8)
    model = RidgeCV(alphas=ALPHAS).fit(torch.from_numpy(X), torch.from_numpy(Y))
    assert model.coef_.shape == (100, 8)
    assert model.intercept_.shape == (8,)
    assert model.best_alphas_.shape == (8,)
    assert model.cv_scores_.shape == (len(ALPHAS), 8)
    prediction = model.predict(X_test)
    assert prediction.shape == (15, 8) and prediction.dtype == np.float32
    np.testing.assert_allclose(model.predict(torch.from_numpy(X_test)), prediction)
    np.testing.assert_allclose(
        model.score(X, Y), sklearn_r2(Y, model.predict(X), multioutput="raw_values"), rtol=1e-5
    )


def test_kfold_splits_match_sklearn():
    ours = kfold_splits(23, 5)
    reference = list(KFold(5).split(np.zeros(23)))
    for (train, val), (ref_train, ref_val) in zip(ours, reference, strict=True):
        np.testing.assert_array_equal(train, ref_train)
        np.testing.assert_array_equal(val, ref_val)

    shuffled = kfold_splits(23, 5, shuffle=True, seed=1)
    all_val = np.concatenate([val for _, val in shuffled])
    np.testing.assert_array_equal(np.sort(all_val), np.arange(23))
    assert [len(val) for _, val in shuffled] == [5, 5, 5, 4, 4]
    for train, val in shuffled:
        assert np.intersect1d(train, val).size == 0 and len(train) + len(val) == 23
    assert not np.array_equal(shuffled[0][1], ours[0][1])
    again = kfold_splits(23, 5, shuffle=True, seed=1)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(shuffled, again))


def test_rejects_mismatched_samples():
    X, Y, _ = make_data(40, 10, 3)
    with pytest.raises(ValueError, match="X has 40 samples but Y has 39"):
        RidgeCV().fit(X, Y[:-1])


@pytest.mark.parametrize("name", ["X", "Y"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_rejects_non_finite_input(name, bad):
    X, Y, _ = make_data(40, 10, 3)
    (X if name == "X" else Y)[5, 1] = bad
    with pytest.raises(ValueError, match=f"{name} contains NaN or infinite values \\(in 1 of 40 samples\\)"):
        RidgeCV().fit(X, Y)


def test_rejects_bad_arguments():
    X, Y, X_test = make_data(40, 10, 3)
    with pytest.raises(ValueError, match="Y must be 2-D"):
        RidgeCV().fit(X, Y[:, 0])
    with pytest.raises(ValueError, match="dtype must be one of"):
        RidgeCV(dtype="float16").fit(X, Y)
    with pytest.raises(ValueError, match="alphas must be"):
        RidgeCV(alphas=[1.0, -1.0]).fit(X, Y)
    with pytest.raises(ValueError, match="solver must be one of"):
        RidgeCV(solver="cholesky").fit(X, Y)
    with pytest.raises(ValueError, match="n_folds must be between 2 and"):
        RidgeCV(n_folds=41).fit(X, Y)
    with pytest.raises(ValueError, match="not fitted"):
        RidgeCV().predict(X_test)
    with pytest.raises(ValueError, match="X has 9 features but the model was fitted on 10"):
        RidgeCV().fit(X, Y).predict(X_test[:, :9])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    X, Y, X_test = make_data(40, 100, 8)
    cpu = RidgeCV(alphas=ALPHAS, dtype="float64").fit(X, Y)
    gpu = RidgeCV(alphas=ALPHAS, dtype="float64", device="cuda").fit(X, Y)
    np.testing.assert_array_equal(gpu.best_alphas_, cpu.best_alphas_)
    assert relative_error(gpu.predict(X_test), cpu.predict(X_test)) <= 1e-6


@pytest.mark.parametrize("scoring", ["neg_mse", "r2"])
def test_constant_target_takes_the_largest_alpha(scoring):
    X, Y, X_test = make_data(40, 100, 3)
    Y[:, 1] = 4.0  # every alpha scores the same: ties go to the largest, as in himalaya
    model = RidgeCV(alphas=ALPHAS, dtype="float64", scoring=scoring).fit(X, Y)
    assert model.best_alphas_[1] == ALPHAS[-1]
    np.testing.assert_allclose(model.predict(X_test)[:, 1], 4.0, rtol=1e-6)
    np.testing.assert_allclose(model.score(X, Y)[1], 0.0)


@pytest.mark.parametrize("shape", [(7, 3), (2, 5), (40, 100)])
def test_blockwise_gram_matches_matmul(shape):
    M = torch.from_numpy(np.random.default_rng(0).standard_normal(shape))
    np.testing.assert_allclose(ridge_module._gram(M).numpy(), (M @ M.T).numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scoring", ["neg_mse", "r2"])
@pytest.mark.parametrize("shape", [(45, 12, 5), (30, 60, 5)])
def test_cv_scores_match_fold_by_fold_solves(shape, scoring):
    """Every alpha's score, refitting each fold with np.linalg.solve (with centring by the
    training-fold means), against cv_scores_ from the shared decompositions."""
    X, Y, _ = make_data(*shape)
    alphas = [0.1, 10.0, 1000.0]
    model = RidgeCV(alphas=alphas, n_folds=4, shuffle=True, seed=5, dtype="float64", scoring=scoring)
    model.fit(X, Y)
    expected = np.zeros((len(alphas), Y.shape[1]))
    for train, val in kfold_splits(len(X), 4, shuffle=True, seed=5):
        x_mean, y_mean = X[train].mean(0), Y[train].mean(0)
        Xc, Yc = X[train] - x_mean, Y[train] - y_mean
        for i, alpha in enumerate(alphas):
            coef = np.linalg.solve(Xc.T @ Xc + alpha * np.eye(X.shape[1]), Xc.T @ Yc)
            prediction = (X[val] - x_mean) @ coef + y_mean
            if scoring == "neg_mse":
                expected[i] += -((Y[val] - prediction) ** 2).mean(0)
            else:
                expected[i] += sklearn_r2(Y[val], prediction, multioutput="raw_values")
    np.testing.assert_allclose(model.cv_scores_, expected / 4, rtol=1e-9)
    np.testing.assert_array_equal(model.best_alphas_, np.asarray(alphas)[(expected / 4).argmax(0)])


@pytest.mark.parametrize("solver", ["primal", "kernel"])
def test_shared_alpha_matches_sklearn(solver):
    """alpha_per_target=False: the alpha of the best R^2 averaged over targets and folds, as
    scikit-learn's RidgeCV(alpha_per_target=False) with the same folds."""
    from sklearn.linear_model import RidgeCV as SklearnRidgeCV

    X, Y, X_test = make_data(60, 20 if solver == "primal" else 100, 8)
    model = RidgeCV(alphas=ALPHAS, n_folds=5, solver=solver, scoring="r2", alpha_per_target=False,
                    dtype="float64").fit(X, Y)
    reference = SklearnRidgeCV(alphas=ALPHAS, cv=KFold(5), scoring="r2").fit(X, Y)
    assert (model.best_alphas_ == reference.alpha_).all()
    np.testing.assert_allclose(model.predict(X_test), reference.predict(X_test), rtol=1e-5, atol=1e-6)
    per_target = RidgeCV(alphas=ALPHAS, n_folds=5, solver=solver, scoring="r2", dtype="float64").fit(X, Y)
    assert len(set(per_target.best_alphas_)) > 1  # the data do ask for different alphas per target


def test_eigh_that_does_not_converge_in_float32_is_redone_in_float64(monkeypatch):
    # LAPACK's float32 eigh fails (error 991) on some Gram matrices with many zero columns, which the
    # encoding voxel weights produce; the solver then redoes that decomposition in float64.
    rng = np.random.default_rng(0)
    X = np.zeros((60, 20), np.float32)
    X[:, :4] = rng.standard_normal((60, 4))
    Y = X[:, :4] @ rng.standard_normal((4, 3)).astype(np.float32) + 0.1 * rng.standard_normal((60, 3)).astype(np.float32)
    expected = RidgeCV(alphas=[0.1, 1.0, 10.0], n_folds=3, dtype="float32", device="cpu").fit(X, Y).coef_
    real = torch.linalg.eigh
    calls = []

    def failing(matrix):
        calls.append(matrix.dtype)
        if matrix.dtype == torch.float32:
            raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge (error code: 991)")
        return real(matrix)

    monkeypatch.setattr(torch.linalg, "eigh", failing)
    coef = RidgeCV(alphas=[0.1, 1.0, 10.0], n_folds=3, dtype="float32", device="cpu").fit(X, Y).coef_
    assert torch.float64 in calls and coef.dtype == np.float32
    np.testing.assert_allclose(coef, expected, rtol=1e-4, atol=1e-5)
