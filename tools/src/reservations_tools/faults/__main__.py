"""``python -m reservations_tools.faults``, the same as ``reservations-tools faults``."""

from .cli import app

app()
