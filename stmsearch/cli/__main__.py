"""``python -m stmsearch.cli``: the same as the ``stmsearch`` command."""
from . import main

main()
