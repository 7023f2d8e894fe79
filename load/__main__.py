"""`python -m load <scenario> ...`: see `load.cli`."""

from load.cli import main

main()
