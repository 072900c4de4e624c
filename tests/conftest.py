import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory):
    """A tiny base and nudger saved as Hugging Face folders, for the CLI and loaders (specs are paths)."""
    from tiny import save_tiny_models

    return save_tiny_models(tmp_path_factory.mktemp("tiny-models"))


LONG_RUNS = ("fuzz_long", "schema_fuzz_long")  # markers of runs that take many minutes


def pytest_collection_modifyitems(config, items):
    """The long runs (markers in LONG_RUNS) run only when a -m expression names their marker."""
    named = set(re.findall(r"\w+", config.getoption("markexpr") or ""))
    left_out = [marker for marker in LONG_RUNS if marker not in named]
    long_runs = [item for item in items if any(item.get_closest_marker(marker) for marker in left_out)]
    if long_runs:
        config.hook.pytest_deselected(items=long_runs)
        items[:] = [item for item in items if item not in long_runs]
