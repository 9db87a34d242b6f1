"""The CEL runtime without its command-line interface.

`cel/__init__.py` (common-expression-language 0.10) imports its CLI, and with it typer,
prompt_toolkit, pygments and rich (~7 MB resident), before the Rust extension the rules
use; the package has no import path that skips it. While the package initialises, a
placeholder stands in for `cel.cli`; it is removed afterwards, so an explicit
`import cel.cli` (the `cel` command) still loads the real one. Only this module imports
`cel`: the rest of `rules` imports it from here.
"""

from __future__ import annotations

import sys
import types

if "cel" in sys.modules:  # imported already (a test, a tool): nothing to save
    import cel
else:
    _stub = sys.modules.setdefault("cel.cli", types.ModuleType("cel.cli"))
    try:
        import cel
    finally:
        if sys.modules.get("cel.cli") is _stub:
            del sys.modules["cel.cli"]
            if getattr(sys.modules.get("cel"), "cli", None) is _stub:
                del cel.cli

__all__ = ["cel"]
