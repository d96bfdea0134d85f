"""Allow ``python -m regfs``."""

from regfs.cli import main

raise SystemExit(main())
