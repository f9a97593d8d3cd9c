"""The two-pathway family (paper Sec. 3, docs/paper-setup.md part B): ``schema`` (config), ``data``
(the hierarchical task), ``model`` (the multi-pathway network), ``module`` (the LightningModule),
``reference`` (the per-mode ODE), ``experiment`` (module + callbacks + figures of a run) and
``phase`` (phase portraits of the scalar system, Figs. 1 and 7)."""
