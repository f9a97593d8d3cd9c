"""Model families, one package each: ``matcomp`` (deep matrix factorisation, paper Sec. 4) and
``multipath`` (the two-pathway network, paper Sec. 3). :mod:`cpl.config.registry` names them."""
