r"""Dictionary learning: codes and unit-norm atoms fitted to data.

Both learners minimise, over codes ``Z`` and unit-norm atoms ``D`` (the rows
of the dictionary), the mean per-sample lasso objective

.. math:: F(Z, D) = \frac{1}{n} \sum_i \tfrac12 \lVert x_i - z_i D \rVert_2^2
          + \alpha \lVert z_i \rVert_1 .

* ``_alternation.learn_dictionary``, the paper's DL-FISTA, on data held in
  memory;
* ``_online.online_dictionary_update``, its streaming counterpart.

Both update atoms by ``_updates`` (least squares, block coordinate descent;
the oracle's least squares too) and draw and resample them by ``_atoms``
(atoms from the data, and the memory of atoms resampled as duplicates). The
lasso they solve is :mod:`skdict._fista`'s, which knows nothing of them.
"""
