"""A toy model family (linear regression by full-batch gradient descent), used by tests/test_toy_family.py
to show that a third family is a package like this one plus one registry line:
``cpl.config.register_family("toy", "toy_family")`` (or an entry in ``cpl.config.registry.FAMILIES``)."""
