"""``driver.py`` and ``site/`` are run by the harness in subprocesses; they are not test modules
(``--doctest-modules`` would import them into the test process)."""

collect_ignore = ["driver.py", "site"]
