"""The matrix-completion family (paper Sec. 4, docs/paper-setup.md part A): ``schema`` (config),
``data`` (ground truths and observation sets), ``model`` (the deep factorisation), ``module``
(the LightningModule), ``references`` (analytic references), ``batching`` (members sharing a
pre-training trunk) and ``experiment`` (module + callbacks + figures of a run)."""
