"""``python -m tricklab`` (and ``torchrun ... -m tricklab``) runs the CLI."""

from tricklab.cli import main

raise SystemExit(main())
