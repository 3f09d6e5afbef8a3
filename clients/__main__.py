"""``python -m clients`` runs the `sinergi` command line."""

from clients._cli import main

main()
