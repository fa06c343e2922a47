"""Q1.3: self-attention probabilities P = softmax(X A X^T) with A = W_Q W_K^T / sqrt(d).

X is (L, n), W_Q and W_K are (n, d) with d <= n. A is (n, n) but factors through d
dimensions, so rank(A) <= d; and W_Q -> W_Q B, W_K -> W_K B^{-T} leaves A, hence P,
unchanged for any invertible B (d, d). Each claim is measured on random float64 instances.
"""

from __future__ import annotations

import math

import numpy as np

# (L, n, d) of the random instances; d = n and d = 1 are the edge cases
ATTENTION_SIZES = [(10, 16, 4), (6, 8, 2), (12, 8, 8), (20, 32, 5), (16, 64, 1)]


def softmax_rows(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def probabilities(X: np.ndarray, Wq: np.ndarray, Wk: np.ndarray) -> np.ndarray:
    """One head's P = softmax(Q K^T / sqrt d) row-wise, Q = X W_Q, K = X W_K: (L, L)."""
    d = Wq.shape[1]
    return softmax_rows((X @ Wq) @ (X @ Wk).T / math.sqrt(d))


def bilinear_form(Wq: np.ndarray, Wk: np.ndarray) -> np.ndarray:
    """A = W_Q W_K^T / sqrt(d): (n, n)."""
    return Wq @ Wk.T / math.sqrt(Wq.shape[1])


def numerical_rank(A: np.ndarray) -> tuple[int, float, np.ndarray]:
    """Rank by SVD with numpy's matrix_rank tolerance; also the tolerance and the singular values."""
    singular = np.linalg.svd(A, compute_uv=False)
    tol = singular.max() * max(A.shape) * np.finfo(np.float64).eps
    return int((singular > tol).sum()), float(tol), singular


def reparametrise(Wq: np.ndarray, Wk: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The second head of Q1.3: W_Q' = W_Q B, W_K' = W_K B^{-T}."""
    return Wq @ B, Wk @ np.linalg.inv(B).T


def head_difference(X: np.ndarray, head1: tuple[np.ndarray, np.ndarray],
                    head2: tuple[np.ndarray, np.ndarray]) -> float:
    """max |P(head 2) - P(head 1)| over the (L, L) probabilities; heads are (W_Q, W_K)."""
    return float(np.abs(probabilities(X, *head2) - probabilities(X, *head1)).max())


def random_invertible(rng: np.random.Generator, d: int) -> np.ndarray:
    """B = U diag(s) V^T with singular values in [0.5, 2]: invertible, condition number <= 4."""
    U, _ = np.linalg.qr(rng.standard_normal((d, d)))
    V, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return U @ np.diag(rng.uniform(0.5, 2.0, d)) @ V.T


def attention_case(rng: np.random.Generator, L: int, n: int, d: int) -> dict:
    """One random instance in float64: rank of A, the two softmax forms, invariance to B."""
    X = rng.standard_normal((L, n))
    Wq, Wk = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    A = bilinear_form(Wq, Wk)
    rank, tol, singular = numerical_rank(A)
    P_bilinear = softmax_rows(X @ A @ X.T)
    B = random_invertible(rng, d)
    return {
        "L": L, "n": n, "d": d, "rank": rank, "rank_tolerance": tol,
        "singular_value_after_d": float(singular[d]) if d < n else None,
        "softmax_max_abs_diff": float(np.abs(probabilities(X, Wq, Wk) - P_bilinear).max()),
        "B_condition_number": float(np.linalg.cond(B)),
        "invariance_max_abs_diff": head_difference(X, (Wq, Wk), reparametrise(Wq, Wk, B)),
    }


def attention_checks(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    cases = [attention_case(rng, *size) for size in ATTENTION_SIZES]
    first = cases[0]
    return {
        # the first instance's rank and d; every instance is listed in `cases`
        "max_rank": first["rank"], "d": first["d"], "n": first["n"],
        "all_rank_le_d": all(c["rank"] <= c["d"] for c in cases),
        "largest_rank_minus_d": max(c["rank"] - c["d"] for c in cases),
        "rank_tolerance": "sigma_max * max(n, n) * float64 eps (numpy's matrix_rank default)",
        "softmax_max_abs_diff": max(c["softmax_max_abs_diff"] for c in cases),
        "invariance_max_abs_diff": max(c["invariance_max_abs_diff"] for c in cases),
        "cases": cases,
    }
