"""Makes `python -m provision` run the CLI."""

from .cli import main

main()
