"""RAPIDS cuML models used in place of the project's own where installed (optional extra ``rapids``).

cuML is never imported at ``import gpu_trader`` time, only by the first call that could use it,
and only for data already on a CUDA device (an array exposing ``__cuda_array_interface__``,
such as CuPy's): a host array never pulls cuML in. Absent cuML (or a broken install that fails
to import), the callers fall back to the project's own implementation.
"""
from __future__ import annotations

import functools
import importlib
from typing import Any

import numpy as np

__all__ = ["cuml_kmeans"]


@functools.cache
def _cuml_kmeans_class() -> Any:
    """cuML's ``KMeans`` class, or None where cuML does not import (tried once per process: a
    failed import is not retried on every ``distill``)."""
    try:
        return importlib.import_module("cuml.cluster").KMeans
    except Exception:  # ImportError, or a CUDA/driver error raised while cuML loads
        return None


def cuml_kmeans(x: Any, n_clusters: int, n_iter: int, seed: int, tol: float) -> tuple[Any, Any, float] | None:
    """k-means of the rows of a device array ``x`` ``(n, dim)`` by cuML's ``KMeans`` (its
    k-means++ seeding, one initialization, at most ``n_iter`` Lloyd iterations, its own stopping
    rule on ``tol``, ``random_state=seed``), as :func:`gpu_trader._internal.vector_xp.kmeans`
    returns it: ``(centroids (n_clusters, dim) on the device, labels int64 (n,) on the device,
    inertia float)``. None when ``x`` is not on a CUDA device or cuML is not installed."""
    if not hasattr(x, "__cuda_array_interface__"):
        return None
    kmeans_class = _cuml_kmeans_class()
    if kmeans_class is None:
        return None
    model = kmeans_class(n_clusters=n_clusters, max_iter=n_iter, tol=tol, random_state=seed,
                         init="k-means++", n_init=1, output_type="cupy")
    model.fit(x)
    return model.cluster_centers_, model.labels_.astype(np.int64), float(model.inertia_)
