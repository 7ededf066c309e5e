"""``python -m reservations_tools up|status|loadtest|faults``."""

from .cli import main

main()
