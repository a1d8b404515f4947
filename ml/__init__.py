"""LeanML's numerical core. Plain Python on pandas / NumPy / scikit-learn.

Nothing in this package imports Django, DRF or Celery (tests/ml/test_isolation.py
keeps it so); randomness comes from an explicit ``seed``.
"""
