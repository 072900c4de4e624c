import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory):
    """A tiny base and nudger saved as Hugging Face folders, for the CLI and loaders (specs are paths)."""
    from tiny import save_tiny_models

    return save_tiny_models(tmp_path_factory.mktemp("tiny-models"))


def pytest_collection_modifyitems(config, items):
    """The long fuzzing run (marker fuzz_long) runs only when a -m expression names it."""
    if "fuzz_long" in (config.getoption("markexpr") or ""):
        return
    long_runs = [item for item in items if item.get_closest_marker("fuzz_long")]
    if long_runs:
        config.hook.pytest_deselected(items=long_runs)
        items[:] = [item for item in items if not item.get_closest_marker("fuzz_long")]
