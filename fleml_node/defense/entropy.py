"""Information-theoretic anomaly signals of FLEML.

FLEML ("Entropy-guided meta-learning defense against data poisoning attacks in
blockchain-assisted federated learning", Information Sciences, 2026,
doi:10.1016/j.ins.2026.123389) detects anomalous updates with von Neumann entropy,
conditional entropy and mutual information. The paper gives no formulas; this module fixes
them as follows (all entropies in nats).

Von Neumann entropy of a set of updates
    Kernel: linear on L2-normalised updates, i.e. the cosine Gram matrix ``K_ij = cos(u_i,
    u_j)`` (positive semi-definite, scale-free, so magnitude attacks are left to the norm
    feature). ``rho = K / tr(K)`` is a density matrix; ``S = -sum(lambda log lambda)`` over its
    eigenvalues (tiny negative eigenvalues from rounding are clipped to 0). ``S = 0`` when all
    updates point the same way (rank 1) and ``S = log k`` for ``k`` orthogonal updates; it
    measures how many independent directions the round spans.

Leave-one-out signal
    ``dS_i = S(all) - S(all without i)``. A client pointing somewhere the others do not adds a
    direction, so removing it lowers the entropy a lot: ``dS_i`` is large and positive. A
    client inside the consensus cluster is redundant; removing it leaves the spectrum almost
    unchanged or makes it more even, so ``dS_i`` is near 0 or negative. Large = anomalous.

Conditional entropy and mutual information with a robust reference
    ``R`` is the coordinate-wise median of the round. Each vector (client update and ``R``) is
    divided by its root-mean-square over the compared coordinates, then all are discretised on
    one shared grid: ``bins`` equal-frequency bins whose edges are quantiles of the pooled
    standardised values of all clients and ``R`` (duplicate edges merged; at most
    ``sqrt(m / 4)`` bins for ``m`` coordinates, so the joint histogram averages at least 4
    samples per cell). Plug-in estimates
    from the joint histogram give ``H(U_i)``, ``H(R)``, ``H(U_i, R)``, then
    ``H(U_i | R) = H(U_i, R) - H(R)`` and ``I(U_i; R) = H(U_i) + H(R) - H(U_i, R)``; both are
    clipped to ``[0, H(U_i)]``. A benign update is partly predictable from the consensus (high
    MI, low conditional entropy); a poisoned one is not.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_EIG_EPS = 1e-12
_EDGE_VALUES = 65536


def cosine_gram(vectors: Tensor) -> Tensor:
    """Cosine Gram matrix of the rows.

    Dot products are taken in the input's dtype (no copy of the vectors), normalised in
    float64. Rows with zero norm give zero rows and columns (they span no direction).

    Parameters
    ----------
    vectors : Tensor
        Shape ``[n, m]``.

    Returns
    -------
    Tensor
        float64, shape ``[n, n]``, ``K_ij = cos(v_i, v_j)``.
    """
    gram = (vectors @ vectors.T).to(torch.float64)
    norms = gram.diagonal().clamp(min=0.0).sqrt()
    safe = torch.where(norms > 0, norms, 1.0)
    gram = gram / safe[:, None] / safe[None, :]
    return (gram + gram.T) / 2


def closest_peer_cosine(gram: Tensor) -> Tensor:
    """Each row's largest cosine to another row of a cosine Gram matrix.

    A coalition that sends copies of one crafted vector has a peer at cosine 1; so do rows
    that would not change the von Neumann entropy if removed with their copy (the Gram
    matrix is rank-deficient along them). With one row there is no peer: ``-1``.

    Parameters
    ----------
    gram : Tensor
        Cosine Gram matrix, shape ``[n, n]``.

    Returns
    -------
    Tensor
        float64, shape ``[n]``, in ``[-1, 1]``.
    """
    gram = gram.to(torch.float64).clamp(-1.0, 1.0)
    n = gram.shape[0]
    if n < 2:
        return torch.full((n,), -1.0, dtype=torch.float64)
    off = gram.masked_fill(torch.eye(n, dtype=torch.bool), -math.inf)
    return off.max(dim=1).values


def von_neumann_entropy(gram: Tensor) -> Tensor:
    """Von Neumann entropy of ``rho = K / tr(K)``.

    Parameters
    ----------
    gram : Tensor
        Positive semi-definite kernel matrix, shape ``[..., k, k]`` (batches allowed).

    Returns
    -------
    Tensor
        float64, shape ``[...]``, in nats; 0 for an empty or all-zero kernel.
    """
    gram = gram.to(torch.float64)
    if gram.shape[-1] == 0:
        return torch.zeros(gram.shape[:-2], dtype=torch.float64)
    trace = gram.diagonal(dim1=-2, dim2=-1).sum(-1)
    safe = torch.where(trace > 0, trace, 1.0)
    eig = torch.linalg.eigvalsh(gram / safe[..., None, None]).clamp(min=0.0)
    terms = torch.where(eig > _EIG_EPS, -eig * torch.log(eig.clamp(min=_EIG_EPS)), 0.0)
    return torch.where(trace > 0, terms.sum(-1), 0.0)


def leave_one_out_entropy(gram: Tensor) -> Tensor:
    """Per-client entropy change ``S(all) - S(all without i)``.

    Parameters
    ----------
    gram : Tensor
        Kernel matrix of the round, shape ``[n, n]``.

    Returns
    -------
    Tensor
        float64, shape ``[n]``; large positive values mark clients that add a direction.
    """
    n = gram.shape[0]
    full = von_neumann_entropy(gram)
    keep = torch.stack([torch.cat([torch.arange(i), torch.arange(i + 1, n)]) for i in range(n)])
    minors = gram[keep[:, :, None], keep[:, None, :]]
    return full - von_neumann_entropy(minors)


def plugin_entropy(counts: Tensor) -> Tensor:
    """Plug-in (maximum-likelihood) entropy of histograms along the last dimension.

    Parameters
    ----------
    counts : Tensor
        Non-negative counts, shape ``[..., k]``.

    Returns
    -------
    Tensor
        float64, shape ``[...]``, in nats.
    """
    counts = counts.to(torch.float64)
    p = counts / counts.sum(-1, keepdim=True).clamp(min=1.0)
    return -(torch.where(p > 0, p * torch.log(p.clamp(min=1e-300)), 0.0)).sum(-1)


def shared_edges(values: Tensor, bins: int, max_values: int = _EDGE_VALUES) -> Tensor:
    """Interior edges of ``bins`` equal-frequency bins of the pooled ``values``.

    Quantiles are taken over at most ``max_values`` values, an evenly strided subset of the
    flattened input, which keeps the sort cheap (the estimate of a quantile from 65536 values
    is within about 0.4 percentage points of its rank).

    Parameters
    ----------
    values : Tensor
        Pooled values (any shape, flattened).
    bins : int
        Number of bins, ``>= 2``.
    max_values : int
        Largest number of values sorted.

    Returns
    -------
    Tensor
        Sorted unique edges, at most ``bins - 1`` of them (ties merge bins).
    """
    flat = values.reshape(-1)
    step = math.ceil(flat.numel() / max_values)
    flat = torch.sort(flat[::step].to(torch.float64)).values
    positions = [(k * flat.numel()) // bins for k in range(1, bins)]
    return torch.unique(flat[positions])


def information_from_joint(joint: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Plug-in ``H(U_i | R)``, ``I(U_i; R)`` and ``H(U_i)`` from joint histograms.

    Parameters
    ----------
    joint : Tensor
        Counts, shape ``[n, bins, bins]``: ``joint[i, a, b]`` = coordinates where client ``i``
        falls in bin ``a`` and the reference in bin ``b``.

    Returns
    -------
    conditional_entropy, mutual_information, marginal_entropy : Tensor
        float64, shape ``[n]`` each, with ``0 <= H(U|R) <= H(U)`` and ``0 <= I <= H(U)``.
    """
    n = joint.shape[0]
    h_joint = plugin_entropy(joint.reshape(n, -1))
    h_u = plugin_entropy(joint.sum(dim=2))
    h_r = plugin_entropy(joint.sum(dim=1))
    cond = torch.minimum((h_joint - h_r).clamp(min=0.0), h_u)
    mi = torch.minimum((h_u + h_r - h_joint).clamp(min=0.0), h_u)
    return cond, mi, h_u


def conditional_entropy_and_mi(
    codes: Tensor, reference_codes: Tensor, bins: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Plug-in ``H(U_i | R)``, ``I(U_i; R)`` and ``H(U_i)`` from discretised values.

    Parameters
    ----------
    codes : Tensor
        Bin indices in ``[0, bins)`` of each client, integer, shape ``[n, m]``.
    reference_codes : Tensor
        Bin indices of the reference, shape ``[m]``.
    bins : int
        Number of bins.

    Returns
    -------
    conditional_entropy, mutual_information, marginal_entropy : Tensor
        As in :func:`information_from_joint`.
    """
    joint = torch.stack(
        [torch.bincount(row * bins + reference_codes, minlength=bins * bins) for row in codes]
    )
    return information_from_joint(joint.reshape(codes.shape[0], bins, bins))


def reference_information(
    vectors: Tensor, reference: Tensor, bins: int = 16
) -> tuple[Tensor, Tensor]:
    """Conditional entropy and mutual information of each row with a reference vector.

    Rows are standardised and discretised one at a time, so the extra memory is ``O(m)``
    beyond the ``n x bins x bins`` histograms.

    Parameters
    ----------
    vectors : Tensor
        Client values on the compared coordinates, shape ``[n, m]``.
    reference : Tensor
        Reference values on the same coordinates, shape ``[m]``.
    bins : int
        Equal-frequency bins of the shared grid; reduced to ``max(2, floor(sqrt(m / 4)))``
        when the ``m`` coordinates are too few for at least 4 samples per joint cell on
        average.

    Returns
    -------
    conditional_entropy, mutual_information : Tensor
        float64, shape ``[n]`` each, in nats.
    """
    n, m = vectors.shape
    bins = max(2, min(bins, math.isqrt(m // 4)))
    rms = torch.linalg.vector_norm(vectors, dim=1).to(torch.float64) / math.sqrt(m)
    scale = torch.where(rms > 0, rms, 1.0)
    ref = reference.to(torch.float64)
    ref_rms = float(torch.linalg.vector_norm(ref)) / math.sqrt(m)
    ref = ref / (ref_rms if ref_rms > 0 else 1.0)
    # the pooled standardised values [vectors; reference], strided as in shared_edges
    total = (n + 1) * m
    pos = torch.arange(0, total, math.ceil(total / _EDGE_VALUES))
    row, col = pos // m, pos % m
    client = row.clamp(max=n - 1)
    pooled = torch.where(row < n, vectors[client, col].to(torch.float64) / scale[client], ref[col])
    edges = shared_edges(pooled, bins)
    ref_codes = torch.bucketize(ref, edges)
    joint = torch.stack(
        [
            torch.bincount(
                torch.bucketize(vectors[i].to(torch.float64) / scale[i], edges) * bins + ref_codes,
                minlength=bins * bins,
            )
            for i in range(n)
        ]
    )
    cond, mi, _ = information_from_joint(joint.reshape(n, bins, bins))
    return cond, mi
