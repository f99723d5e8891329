"""Ridge regression with one alpha per target, chosen by K-fold cross-validation.

A scikit-learn / himalaya style estimator whose computations run in torch, on CPU
or CUDA. Every alpha of the grid is solved from one eigendecomposition per fold:

- ``"kernel"`` form (more features than samples, the fMRI case): eigh of the
  linear kernel ``X_train X_train^T`` [n_train, n_train]; the kernel of all
  samples is computed once and each fold takes its sub-blocks.
- ``"primal"`` form (at least as many samples as features): eigh of
  ``X_train^T X_train`` [F, F].

With ``K = V diag(s) V^T`` (or ``X^T X = Q diag(s) Q^T``) the validation
predictions for alpha are ``A diag(1 / (s + alpha)) B`` with ``A`` and ``B``
computed once per fold, so an alpha costs one [n_val, r] x [r, T] product and
nothing of shape [n_alphas, F, T] is ever formed. The final refit on all samples
applies a per-target diagonal ``1 / (s + alpha_t)`` to one decomposition.

Selection matches himalaya's ``RidgeCV`` / ``KernelRidgeCV``: scores averaged
over folds, ties broken towards the larger alpha, intercept fitted by centring X
and Y with the training-fold means (the intercept is not penalised).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# One decade apart: z-scored inputs with a few hundred features want alphas near
# 1-1e3, tens of thousands of voxels want 1e3-1e7. Extra alphas are cheap here.
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-2, 7, 10))

SOLVERS = ("auto", "primal", "kernel")
SCORINGS = ("neg_mse", "r2")
DTYPES = {"float32": torch.float32, "float64": torch.float64}

# Largest [rows, targets] block handled at once (128 MiB in float32): targets are
# processed in chunks so that encoding models with ~60k voxel targets fit in memory.
_BLOCK_ELEMENTS = 2**25


def kfold_splits(
    n_samples: int, n_folds: int, shuffle: bool = False, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) sample indices of K folds, as scikit-learn's ``KFold``.

    Without shuffling the folds are contiguous blocks of samples, the right
    choice for fMRI time series whose neighbouring TRs are correlated; this is
    also what himalaya does when given ``cv=n_folds``. The first
    ``n_samples % n_folds`` folds hold one sample more.
    """
    if not 2 <= n_folds <= n_samples:
        raise ValueError(f"n_folds must be between 2 and the number of samples ({n_samples}), got {n_folds}")
    order = np.random.default_rng(seed).permutation(n_samples) if shuffle else np.arange(n_samples)
    sizes = np.full(n_folds, n_samples // n_folds)
    sizes[: n_samples % n_folds] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    splits = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        is_val = np.zeros(n_samples, dtype=bool)
        is_val[order[start:stop]] = True
        splits.append((np.flatnonzero(~is_val), np.flatnonzero(is_val)))
    return splits


class RidgeCV:
    """Ridge regression ``min_W ||X W + b - Y||^2 + alpha_t ||W_t||^2`` per target t.

    Args:
        alphas: grid of regularisation strengths (> 0) to search.
        n_folds: number of cross-validation folds.
        fit_intercept: fit an unpenalised intercept (X and Y centred by the
            training means); without it X and Y should already be centred.
        dtype: "float32" or "float64", the precision of every computation.
        device: "cpu" or "cuda" (any torch device string).
        shuffle: shuffle samples before splitting into folds (seeded by ``seed``);
            off by default, giving contiguous folds as himalaya's ``cv=n_folds``.
        seed: seed of the fold shuffling.
        solver: "kernel", "primal", or "auto" (kernel when features outnumber samples).
        scoring: validation score maximised by the alpha search, averaged over
            folds: "neg_mse" (minus the mean squared error, himalaya's default
            ``l2_neg_loss``) or "r2" (coefficient of determination per fold).
        alpha_per_target: one alpha per target (himalaya's choice); False picks
            one alpha for all targets, the best score averaged over targets
            (scikit-learn's ``RidgeCV(alpha_per_target=False)``). With few samples
            per target a shared alpha is the less noisy choice.

    Fitted attributes:
        best_alphas_: [T] chosen alpha per target (float64, values of the grid;
            all equal without alpha_per_target).
        coef_: [F, T] weights; intercept_: [T] (zeros without fit_intercept).
        dual_coef_: [N, T] dual weights and X_fit_: [N, F] the (centred) training features,
            in kernel form (else None): predictions are ``X X_fit_^T dual_coef_ + intercept_``,
            as himalaya's ``KernelRidgeCV``, and ``coef_ = X_fit_^T dual_coef_`` is only
            formed when read: with N < T that product costs more than the whole fit.
        cv_scores_: [n_alphas, T] validation score averaged over folds (float64).
        solver_: "kernel" or "primal", the form used.
    """

    def __init__(
        self,
        alphas: Sequence[float] = DEFAULT_ALPHAS,
        n_folds: int = 5,
        fit_intercept: bool = True,
        dtype: str = "float32",
        device: str = "cpu",
        shuffle: bool = False,
        seed: int = 0,
        solver: str = "auto",
        scoring: str = "neg_mse",
        alpha_per_target: bool = True,
    ) -> None:
        self.alphas = alphas
        self.n_folds = n_folds
        self.fit_intercept = fit_intercept
        self.dtype = dtype
        self.device = device
        self.shuffle = shuffle
        self.seed = seed
        self.solver = solver
        self.scoring = scoring
        self.alpha_per_target = alpha_per_target

    # ------------------------------------------------------------------ public API

    @torch.no_grad()
    def fit(self, X: np.ndarray | torch.Tensor, Y: np.ndarray | torch.Tensor) -> RidgeCV:
        """Choose alphas by K-fold CV (per target, or one shared), then refit on all samples.

        Args:
            X: [N, F] features (e.g. voxels x delays per sample).
            Y: [N, T] targets (e.g. embedding dimensions).
        """
        self._check_params()
        X = self._to_tensor(X, "X")
        Y = self._to_tensor(Y, "Y")
        if X.shape[0] != Y.shape[0]:
            raise ValueError(f"X has {X.shape[0]} samples but Y has {Y.shape[0]}")
        n_samples, n_features = X.shape
        alphas = torch.as_tensor(np.asarray(self.alphas, dtype=np.float64), dtype=X.dtype, device=X.device)
        self.solver_ = self.solver
        if self.solver == "auto":
            self.solver_ = "kernel" if n_features > n_samples else "primal"

        if self.fit_intercept:
            # Centring once on all samples keeps the kernel well conditioned in
            # float32; each fold centres again with its own training means.
            x_mean, y_mean = X.mean(0), Y.mean(0)
            X, Y = X - x_mean, Y - y_mean
        kernel = _gram(X) if self.solver_ == "kernel" else None

        scores = torch.zeros(len(alphas), Y.shape[1], dtype=torch.float64, device=X.device)
        folds = kfold_splits(n_samples, self.n_folds, self.shuffle, self.seed)
        for train, val in folds:
            train_t = torch.as_tensor(train, device=X.device)
            val_t = torch.as_tensor(val, device=X.device)
            if kernel is None:
                s, A, P = self._primal_fold(X, train_t, val_t)
            else:
                s, A, P = self._kernel_fold(kernel, train_t, val_t)
            scores += self._score_alphas(s, A, P, Y[train_t], Y[val_t], alphas)
        scores /= len(folds)

        # Same tie-break as himalaya: on equal scores prefer the larger alpha.
        tie_break = 1e-10 * torch.log(alphas.double())[:, None]
        if self.alpha_per_target:
            best = (scores + tie_break).argmax(0)
        else:
            best = (scores.mean(1, keepdim=True) + tie_break).argmax(0).expand(Y.shape[1])
        weights = self._refit(X, Y, kernel, alphas[best])
        if kernel is None:
            self._coef, self.dual_coef_, self.X_fit_ = weights.cpu().numpy(), None, None
            x_weights = x_mean @ weights if self.fit_intercept else None
        else:
            # No [F, T] product here: predictions go through the training samples (see coef_).
            X_fit = X if self.fit_intercept else X.clone()  # never a view of the caller's array
            self._coef, self.dual_coef_, self.X_fit_ = None, weights.cpu().numpy(), X_fit.cpu().numpy()
            x_weights = (x_mean @ X_fit.T) @ weights if self.fit_intercept else None
        intercept = y_mean - x_weights if self.fit_intercept else torch.zeros_like(weights[0])

        # The grid values themselves, not their float32 roundings.
        self.best_alphas_ = np.asarray(self.alphas, dtype=np.float64)[best.cpu().numpy()]
        self.cv_scores_ = scores.cpu().numpy()
        self.intercept_ = intercept.cpu().numpy()
        self.n_features_in_ = n_features
        return self

    @property
    def coef_(self) -> np.ndarray:
        """[F, T] weights. In kernel form they are formed on first access, ``X_fit_^T dual_coef_``
        (2 N F T flops, [F, T] of memory), and kept."""
        if not hasattr(self, "intercept_"):
            raise AttributeError("RidgeCV is not fitted: call fit(X, Y) first")
        if self._coef is None:
            with torch.no_grad():
                X_fit = torch.as_tensor(self.X_fit_, device=self.device)
                self._coef = (X_fit.T @ torch.as_tensor(self.dual_coef_, device=self.device)).cpu().numpy()
        return self._coef

    @torch.no_grad()
    def predict(self, X: np.ndarray | torch.Tensor) -> np.ndarray:
        """[N, F] features -> [N, T] float32 predictions."""
        if not hasattr(self, "intercept_"):
            raise ValueError("RidgeCV is not fitted: call fit(X, Y) first")
        X = self._to_tensor(X, "X")
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features but the model was fitted on {self.n_features_in_}")
        if self._coef is None:  # kernel form: [N_test, N] kernel against the training samples
            X = X @ torch.as_tensor(self.X_fit_, device=X.device).T
            coef = torch.as_tensor(self.dual_coef_, device=X.device)
        else:
            coef = torch.as_tensor(self._coef, device=X.device)
        intercept = torch.as_tensor(self.intercept_, device=X.device)
        return (X @ coef + intercept).to(torch.float32).cpu().numpy()

    def score(self, X: np.ndarray | torch.Tensor, Y: np.ndarray | torch.Tensor) -> np.ndarray:
        """R^2 of predict(X) against Y per target: [T] (0 for a constant target, as himalaya)."""
        Y = self._to_tensor(Y, "Y").cpu().double()
        pred = torch.as_tensor(self.predict(X)).double()
        if pred.shape != Y.shape:
            raise ValueError(f"Y has shape {tuple(Y.shape)} but the predictions have {tuple(pred.shape)}")
        return _r2_from_residual(Y, Y - pred).numpy()

    # ------------------------------------------------------------------ helpers

    def _check_params(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {SCORINGS}, got {self.scoring!r}")
        alphas = np.asarray(self.alphas, dtype=np.float64)
        if alphas.ndim != 1 or alphas.size == 0 or not np.all((alphas > 0) & np.isfinite(alphas)):
            raise ValueError(f"alphas must be a non-empty 1-D sequence of positive numbers, "
                             f"got {self.alphas!r}")

    def _to_tensor(self, array: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
        tensor = torch.as_tensor(array, dtype=DTYPES[self.dtype], device=self.device)
        if tensor.ndim != 2:
            raise ValueError(f"{name} must be 2-D [samples, {'features' if name == 'X' else 'targets'}], "
                             f"got shape {tuple(tensor.shape)}")
        # One sum first: finite for finite data unless it overflows, 10x cheaper than the full mask.
        if not torch.isfinite(tensor.sum()) and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).any(1).sum())
            raise ValueError(f"{name} contains NaN or infinite values (in {bad} of {tensor.shape[0]} "
                             "samples); remove or impute them first")
        return tensor

    def _primal_fold(
        self, X: torch.Tensor, train: torch.Tensor, val: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Eigenvalues s [F], A = X_val Q [n_val, F], P = (X_train Q)^T [F, n_train]."""
        X_train, X_val = X[train], X[val]
        if self.fit_intercept:
            mean = X_train.mean(0)
            X_train, X_val = X_train - mean, X_val - mean
        s, Q = _eigh(_gram(X_train.T))
        return s.clamp_min(0), X_val @ Q, (X_train @ Q).T

    def _kernel_fold(
        self, kernel: torch.Tensor, train: torch.Tensor, val: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Eigenvalues s [n_train], A = K_val,train V [n_val, n_train], P = V^T [n_train, n_train]."""
        K_train = kernel[train][:, train]
        K_val = kernel[val][:, train]
        if self.fit_intercept:
            # Kernel of the samples centred by the training mean, without X.
            train_means = K_train.mean(0)
            grand_mean = train_means.mean()
            K_train = K_train - train_means[None, :] - train_means[:, None] + grand_mean
            K_val = K_val - train_means[None, :] - K_val.mean(1, keepdim=True) + grand_mean
        s, V = _eigh(K_train)
        return s.clamp_min(0), K_val @ V, V.T

    def _score_alphas(
        self, s: torch.Tensor, A: torch.Tensor, P: torch.Tensor,
        Y_train: torch.Tensor, Y_val: torch.Tensor, alphas: torch.Tensor,
    ) -> torch.Tensor:
        """Validation scores of one fold: [n_alphas, T] (float64)."""
        scores = torch.empty(len(alphas), Y_train.shape[1], dtype=torch.float64, device=A.device)
        chunk = max(1, _BLOCK_ELEMENTS // max(Y_train.shape[0], P.shape[0]))
        for start in range(0, Y_train.shape[1], chunk):
            cols = slice(start, start + chunk)
            y_train, y_val = Y_train[:, cols], Y_val[:, cols]
            if self.fit_intercept:
                y_mean = y_train.mean(0)
                y_train, y_val = y_train - y_mean, y_val - y_mean
            B = P @ y_train
            for i, alpha in enumerate(alphas):
                residual = y_val - (A / (s + alpha)) @ B
                if self.scoring == "neg_mse":
                    scores[i, cols] = -(residual**2).mean(0)
                else:
                    scores[i, cols] = _r2_from_residual(y_val, residual)
        return scores

    def _refit(
        self, X: torch.Tensor, Y: torch.Tensor, kernel: torch.Tensor | None, alphas: torch.Tensor
    ) -> torch.Tensor:
        """On all (already centred) samples, one alpha per target: the weights [F, T] in primal
        form, the dual weights [N, T] in kernel form (weights = X^T dual)."""
        if kernel is None:
            s, Q = _eigh(_gram(X.T))
            P, basis = (X @ Q).T, Q
        else:
            s, V = _eigh(kernel)
            P, basis = V.T, V
        s = s.clamp_min(0)
        weights = torch.empty(basis.shape[0], Y.shape[1], dtype=X.dtype, device=X.device)
        chunk = max(1, _BLOCK_ELEMENTS // max(X.shape))
        for start in range(0, Y.shape[1], chunk):
            cols = slice(start, start + chunk)
            weights[:, cols] = basis @ ((P @ Y[:, cols]) / (s[:, None] + alphas[None, cols]))
        return weights


def _eigh(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`torch.linalg.eigh`, redone in float64 when LAPACK's float32 solver does not converge: it fails on
    Gram matrices with many exactly repeated eigenvalues, e.g. when most voxels are weighted 0."""
    try:
        return torch.linalg.eigh(matrix)
    except torch.linalg.LinAlgError:
        s, Q = torch.linalg.eigh(matrix.double())
        return s.to(matrix.dtype), Q.to(matrix.dtype)


def _gram(M: torch.Tensor, n_blocks: int = 4) -> torch.Tensor:
    """M M^T [n, n] for M [n, d], computing each pair of row blocks once since the
    result is symmetric (about 40% fewer flops than one matmul)."""
    bounds = np.linspace(0, M.shape[0], n_blocks + 1).astype(int)
    gram = torch.empty(M.shape[0], M.shape[0], dtype=M.dtype, device=M.device)
    for i in range(n_blocks):
        rows_i = slice(bounds[i], bounds[i + 1])
        for j in range(i + 1):
            rows_j = slice(bounds[j], bounds[j + 1])
            block = M[rows_i] @ M[rows_j].T
            gram[rows_i, rows_j] = block
            gram[rows_j, rows_i] = block.T
    return gram


def _r2_from_residual(y: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """R^2 per column from targets and residuals [n, T]; 0 where the target is constant."""
    variance = ((y - y.mean(0)) ** 2).sum(0)
    r2 = 1 - (residual**2).sum(0) / variance
    return torch.where(variance == 0, torch.zeros_like(r2), r2)

