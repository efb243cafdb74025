"""Ray Serve applications of adray: any workload's policy behind a FastAPI ingress (``app.py``)."""
