"""``python -m hwnas`` runs the CLI."""
import sys

from hwnas.cli.app import main

sys.exit(main())
