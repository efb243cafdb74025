"""Ray Serve applications of adray: the ranking deployment and its FastAPI ingress (``app.py``)."""
