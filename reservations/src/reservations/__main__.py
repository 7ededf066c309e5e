"""``python -m reservations api|worker|migrate``."""

from .cli import main

main()
