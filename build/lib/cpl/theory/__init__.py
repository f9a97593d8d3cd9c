"""Analytic references as pure functions (ODE right-hand sides, discrete maps, closed forms),
each checked against gradient descent.

Each submodule covers one model family (:mod:`cpl.theory.multipath` for the two-pathway network,
:mod:`cpl.theory.factorization` and :mod:`cpl.theory.closed_form` for matrix completion); the
callbacks in :mod:`cpl.callbacks` only convert steps to time and log. Import the submodules
directly; this package imports none of them.
"""
