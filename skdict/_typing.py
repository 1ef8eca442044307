"""Type aliases of the public signatures.

The estimators check their parameters when fitting, as scikit-learn's do;
these aliases state the same types to static checkers. They include NumPy
scalars, which grids built with NumPy hold and which the checks accept.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
import torch

__all__ = ["ArrayLike", "Bool", "Device", "Float", "Int", "Seed"]

#: Arrays, sparse matrices, tensors, DataFrames, nested lists; or, where a
#: dictionary is expected, a provider (an estimator with ``components_``).
ArrayLike: TypeAlias = Any
Bool: TypeAlias = bool | np.bool_
# Integers too: scikit-learn's checks of real parameters accept them.
Float: TypeAlias = float | np.floating[Any] | np.integer[Any]
Int: TypeAlias = int | np.integer[Any]
#: ``"auto"``, a device name (``"cpu"``, ``"cuda:1"``) or a torch device.
Device: TypeAlias = str | torch.device
Seed: TypeAlias = int | np.integer[Any] | np.random.RandomState | None
