"""LinearSVC's optimisation problem, solved exactly and fast along a path of C values.

scikit-learn's ``LinearSVC`` (liblinear, one-vs-rest, squared hinge, L2 penalty, intercept as an
extra feature of value ``intercept_scaling`` = 1 that is penalised like the others) minimises, for
each class k with targets ``t_i = +1`` (class k) or ``-1``::

    f_k(w) = 0.5 * ||w||^2 + C * sum_i max(0, 1 - t_i * w . [x_i, 1])^2

The seed's grid (6 values of C x 5 folds) takes ~8 minutes with liblinear at ``max_iter=10000``,
mostly at C >= 1, where liblinear's iterations stall. This module solves the same problem with the
finite Newton method (Mangasarian 2002; Keerthi & DeCoste 2005): given the rows inside the
margin (the active set A), the minimiser of the quadratic that agrees with f_k on A is the solution
of a linear system; an exact line search along the step keeps the method monotone, and when the
active set no longer changes the current point is the exact minimiser. It converges in a handful
of steps, and warm starts along increasing C cut that further.

The problem is solved in the data's principal axes (X = Z V', w = V z: nothing is lost, the
optimal w lies in X's row space), so its size is r = rank(X) <= min(n, d + 1), and each Newton
system is solved in whichever of three exact forms is cheapest for that class and step:

* primal, (I + 2C Z_A' Z_A) z = 2C Z_A' t_A, an r x r system whose Gram matrix Z_A' Z_A is kept
  per class and updated only by the rows that entered or left A (most of them do not);
* kernel, z = 2C Z_A' a with (I + 2C Z_A Z_A') a = t_A, an |A| x |A| system (large C: few rows,
  the support vectors, are active);
* complement, Woodbury around the diagonal I + 2C Z'Z: an |I| x |I| system in the few inactive
  rows (small C: nearly every row is active).

At the optimum both solvers give the same model, so accuracies agree with liblinear wherever
liblinear converges (the tests compare them). Two classes give one model, as in LinearSVC.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import AnalysisError

INTERCEPT_SCALING = 1.0
"""LinearSVC's default: the intercept is the weight of a constant feature of this value."""

MAX_NEWTON_ITER = 100
"""Newton steps per value of C; typical runs need 3-20 (the active set settles quickly)."""

GRAD_TOL = 1e-9
"""Also stop a class when its gradient norm falls below this fraction of the one at w = 0 (guards
against an active set that flickers on rows exactly at the margin, in floating point)."""

LINE_SEARCH_STEPS = 30
"""Bisection steps of the exact line search before its final interpolation (bracket 2^-30)."""

FULL_STEP = 1.0 - 1e-9
"""A step this close to 1 counts as a full Newton step for the stopping test."""

GRAM_CACHE_BYTES = 256 * 2**20
"""Memory for the per-class d x d Gram matrices; classes are solved in chunks that fit."""

KERNEL_CACHE_BYTES = 256 * 2**20
"""Largest n x n kernel matrix precomputed for the kernel form (else its blocks are computed)."""

RANK_TOL = 1e-12
"""Principal axes with squared singular value below this fraction of the largest are dropped
(no row has a component there, so the optimal weights have none either)."""


@dataclass(frozen=True, eq=False)
class LinearModel:
    """One fitted LinearSVC-equivalent model: ``decision = X @ coef.T + intercept``."""

    classes: np.ndarray  # (K,) the labels seen in training, sorted
    coef: np.ndarray  # (M, d), M = K (one-vs-rest) or 1 (two classes)
    intercept: np.ndarray  # (M,)
    C: float
    n_iter: int  # Newton steps taken (over all classes, the maximum)
    converged: bool

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """(n, K) scores, or (n,) for two classes (positive means ``classes[1]``)."""
        scores = np.asarray(X, np.float64) @ self.coef.T + self.intercept
        return scores[:, 0] if self.coef.shape[0] == 1 else scores

    def predict(self, X: np.ndarray) -> np.ndarray:
        return predict_from_scores(self.classes, self.decision_function(X))


def predict_from_scores(classes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """LinearSVC's rule: the largest score (first on ties); for two classes, ``classes[1]`` if > 0."""
    if scores.ndim == 1:
        return classes[(scores > 0).astype(np.int64)]
    return classes[np.argmax(scores, axis=1)]


def squared_hinge_path(
    X: np.ndarray,
    y: np.ndarray,
    Cs: Sequence[float],
    *,
    max_iter: int = MAX_NEWTON_ITER,
) -> tuple[LinearModel, ...]:
    """Fit LinearSVC's problem for every C in ``Cs`` (returned in the order given).

    ``X`` (n, d) features (standardise them first, as LinearSVC users do), ``y`` (n,) labels of
    any integer values (at least two distinct). Solutions are exact to floating point when
    ``converged``; a model that hit ``max_iter`` is still the best point reached.
    """
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise AnalysisError(f"need X (n, d) and y (n,), got {X.shape} and {y.shape}")
    if not np.all(np.isfinite(X)):
        raise AnalysisError("features contain NaN or infinite values")
    Cs = [float(c) for c in Cs]
    if not Cs or any(not (c > 0 and math.isfinite(c)) for c in Cs):
        raise AnalysisError(f"C values must be positive and finite, got {Cs}")
    classes = np.unique(y)
    if classes.size < 2:
        raise AnalysisError(f"need at least two classes to train a classifier, got {classes.tolist()}")
    Xb = np.empty((X.shape[0], X.shape[1] + 1), np.float64)
    Xb[:, :-1] = X
    Xb[:, -1] = INTERCEPT_SCALING
    if classes.size == 2:
        T = np.where(y == classes[1], 1.0, -1.0)[:, None]
    else:
        T = np.where(y[:, None] == classes[None, :], 1.0, -1.0)
    order = np.argsort(Cs, kind="stable")  # increasing C: each solution warm-starts the next
    weights = np.zeros((len(Cs), Xb.shape[1], T.shape[1]))
    n_iter = np.zeros((len(Cs), T.shape[1]), np.int64)
    converged = np.zeros((len(Cs), T.shape[1]), bool)
    newton = _Newton(Xb)
    # Classes are independent problems: solve them in chunks whose r x r Gram caches fit.
    chunk = max(1, int(GRAM_CACHE_BYTES // (8 * newton.rank**2)))
    for lo in range(0, T.shape[1], chunk):
        cols = slice(lo, lo + chunk)
        state = newton.start(T[:, cols])
        for j in order:
            n_iter[j, cols], converged[j, cols] = newton.solve(state, Cs[j], max_iter)
            weights[j][:, cols] = newton.weights(state)
    return tuple(
        LinearModel(
            classes=classes,
            coef=np.ascontiguousarray(weights[j][:-1].T),
            intercept=weights[j][-1] * INTERCEPT_SCALING,
            C=Cs[j],
            n_iter=int(n_iter[j].max()),
            converged=bool(converged[j].all()),
        )
        for j in range(len(Cs))
    )


@dataclass
class _State:
    """Newton state of a chunk of m classes (mutable: it is the solver's working memory)."""

    T: np.ndarray  # (n, m) +-1 targets
    W: np.ndarray  # (r, m) current weights in the principal axes
    gram: np.ndarray | None  # (m, r, r) Z_S' Z_S per class, row set S (valid where gram_ok); lazy
    gram_rows: np.ndarray  # (n, m) bool: the rows S each Gram matrix sums
    gram_ok: np.ndarray  # (m,) bool
    g0: np.ndarray  # (m,) gradient norm at w = 0 for C = 1 (scaled by C when used)


class _Newton:
    """Finite Newton method with exact line search for one design matrix (bias column included),
    in its principal axes (see the module docstring)."""

    def __init__(self, X: np.ndarray) -> None:
        n, D = X.shape
        if n >= D:
            lam, V = np.linalg.eigh(X.T @ X)
            keep = lam > RANK_TOL * max(float(lam[-1]), 1.0)
            V = V[:, keep]
            Z = X @ V
            lam = np.einsum("ij,ij->j", Z, Z)  # recomputed on Z so that Z'Z's diagonal is exact
        else:
            lam, U = np.linalg.eigh(X @ X.T)
            keep = lam > RANK_TOL * max(float(lam[-1]), 1.0)
            U, lam = U[:, keep], lam[keep]
            V = (X.T @ U) / np.sqrt(lam)
            Z = U * np.sqrt(lam)
        self.Z, self.V, self.lam = Z, V, lam
        self._kernel: np.ndarray | None = None  # Z Z' (= X X'), made on first need when small enough

    @property
    def rank(self) -> int:
        return self.Z.shape[1]

    def _kernel_block(self, idx: np.ndarray) -> np.ndarray:
        """Z_A Z_A' for the rows ``idx`` (a fresh array)."""
        n = self.Z.shape[0]
        if self._kernel is None and 8 * n * n <= KERNEL_CACHE_BYTES:
            self._kernel = self.Z @ self.Z.T
        if self._kernel is not None:
            return self._kernel[np.ix_(idx, idx)]
        rows = self.Z[idx]
        return rows @ rows.T

    def start(self, T: np.ndarray) -> _State:
        n, r = self.Z.shape
        m = T.shape[1]
        return _State(
            T=T,
            W=np.zeros((r, m)),
            gram=None,
            gram_rows=np.zeros((n, m), bool),
            gram_ok=np.zeros(m, bool),
            g0=np.linalg.norm(2.0 * (self.Z.T @ T), axis=0),
        )

    def weights(self, st: _State) -> np.ndarray:
        """The chunk's current weights in the original coordinates (D, m)."""
        return self.V @ st.W

    def _gram(self, st: _State, k: int, active: np.ndarray) -> np.ndarray:
        """Z_A' Z_A for class k, from its cached Gram matrix or afresh, whichever is cheaper."""
        Z = self.Z
        n_active = int(active.sum())
        fresh_cost = min(n_active, Z.shape[0] - n_active)
        if st.gram is None:
            st.gram = np.empty((st.T.shape[1], self.rank, self.rank))
        if st.gram_ok[k]:
            changed = active != st.gram_rows[:, k]
            if int(changed.sum()) <= fresh_cost:
                enter = changed & active
                leave = changed & ~active
                if enter.any():
                    Ze = Z[enter]
                    st.gram[k] += Ze.T @ Ze
                if leave.any():
                    Zl = Z[leave]
                    st.gram[k] -= Zl.T @ Zl
                st.gram_rows[:, k] = active
                return st.gram[k]
        if n_active <= Z.shape[0] - n_active:
            Za = Z[active]
            st.gram[k] = Za.T @ Za
        else:
            Zi = Z[~active]
            st.gram[k] = np.diag(self.lam) - Zi.T @ Zi
        st.gram_rows[:, k] = active
        st.gram_ok[k] = True
        return st.gram[k]

    def _newton_point(self, st: _State, k: int, active: np.ndarray, C: float) -> np.ndarray:
        """The minimiser of the quadratic agreeing with f_k on the active rows, in the cheapest
        of three exact forms."""
        import scipy.linalg

        Z, r = self.Z, self.rank
        n_active = int(active.sum())
        n_inactive = Z.shape[0] - n_active
        if n_active == 0:
            return np.zeros(r)
        cost = {
            "kernel": n_active**3 / 3,
            "complement": n_inactive**3 / 3 + n_inactive**2 * r,
            "primal": r**3 / 3 + (0 if st.gram_ok[k] else min(n_active, n_inactive) * r * r),
        }
        form = min(cost, key=cost.get)
        if form == "kernel":  # (I + 2C Z_A Z_A') a = t_A, w = 2C Z_A' a
            idx = np.flatnonzero(active)
            K = self._kernel_block(idx)
            K *= 2.0 * C
            K[np.diag_indices(n_active)] += 1.0
            a = scipy.linalg.solve(K, st.T[idx, k], assume_a="pos", overwrite_a=True, check_finite=False)
            return 2.0 * C * (Z[idx].T @ a)
        rhs = 2.0 * C * (Z.T @ np.where(active, st.T[:, k], 0.0))
        if form == "complement":  # H = B - 2C Z_I' Z_I with B = I + 2C diag(lam): Woodbury
            b_inv = 1.0 / (1.0 + 2.0 * C * self.lam)
            u = b_inv * rhs
            if n_inactive == 0:
                return u
            Zi = Z[~active]
            S = -(Zi * b_inv) @ Zi.T
            S[np.diag_indices(n_inactive)] += 1.0 / (2.0 * C)
            s = scipy.linalg.solve(S, Zi @ u, assume_a="pos", overwrite_a=True, check_finite=False)
            return u + b_inv * (Zi.T @ s)
        H = self._gram(st, k, active) * (2.0 * C)
        H[np.diag_indices(r)] += 1.0
        return scipy.linalg.solve(H, rhs, assume_a="pos", overwrite_a=True, check_finite=False)

    def solve(self, st: _State, C: float, max_iter: int) -> tuple[np.ndarray, np.ndarray]:
        """Minimise f_k for every class of the chunk, from the current weights (warm start)."""
        Z, T = self.Z, st.T
        m = T.shape[1]
        done = np.zeros(m, bool)
        full_step = np.zeros(m, bool)
        previous: np.ndarray | None = None
        its = np.zeros(m, np.int64)
        for _ in range(max_iter + 1):
            margins = T * (Z @ st.W)
            active = margins < 1.0
            grad = st.W + 2.0 * C * (Z.T @ np.where(active, (margins - 1.0) * T, 0.0))
            small = np.linalg.norm(grad, axis=0) <= GRAD_TOL * C * st.g0
            if previous is not None:
                # Same active set after a full step: the point solves its own linear system, so
                # it is the exact minimiser.
                done |= np.all(active == previous, axis=0) & full_step
            done |= small
            todo = np.flatnonzero(~done)
            if todo.size == 0 or int(its.max(initial=0)) >= max_iter:
                break
            step = np.zeros_like(st.W)
            for k in todo:
                step[:, k] = self._newton_point(st, k, active[:, k], C) - st.W[:, k]
            its[todo] += 1
            length = _exact_line_search(st.W, step, margins, T * (Z @ step), C, todo)
            st.W += length * step
            full_step = length >= FULL_STEP
            previous = active
        return its, done


def _exact_line_search(W, step, margins, dmargins, C, todo) -> np.ndarray:
    """argmin over t in [0, 1] of f(W + t step) per class (1 where the full step still descends).

    f is convex and piecewise quadratic in t, so its slope is monotone and piecewise linear:
    bisection on the slope's sign brackets the minimiser, then one linear interpolation inside
    the bracket lands on it (exactly when no breakpoint is left inside).
    """
    m = W.shape[1]
    length = np.zeros(m)
    length[todo] = 1.0
    wd = np.einsum("ij,ij->j", W[:, todo], step[:, todo])
    dd = np.einsum("ij,ij->j", step[:, todo], step[:, todo])
    base, delta = margins[:, todo], dmargins[:, todo]

    def slope(t: np.ndarray, cols) -> np.ndarray:
        r = 1.0 - base[:, cols] - t * delta[:, cols]
        inside = np.where(r > 0, delta[:, cols], 0.0)
        return wd[cols] + t * dd[cols] - 2.0 * C * np.einsum("ij,ij->j", inside, r)

    need = np.flatnonzero(slope(np.ones(todo.size), slice(None)) > 0)
    if need.size:
        lo, hi = np.zeros(need.size), np.ones(need.size)
        s_lo, s_hi = slope(lo, need), slope(hi, need)
        for _ in range(LINE_SEARCH_STEPS):
            mid = 0.5 * (lo + hi)
            s_mid = slope(mid, need)
            rising = s_mid > 0
            hi, s_hi = np.where(rising, mid, hi), np.where(rising, s_mid, s_hi)
            lo, s_lo = np.where(rising, lo, mid), np.where(rising, s_lo, s_mid)
        span = s_hi - s_lo
        t = np.where(span > 0, lo - s_lo * (hi - lo) / np.where(span > 0, span, 1.0), lo)
        length[todo[need]] = np.clip(t, lo, hi)
    return length
