"""Analytic references: pure functions (ODEs, closed forms) checked against gradient descent."""
