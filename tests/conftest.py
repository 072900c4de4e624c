import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory):
    """A tiny base and nudger saved as Hugging Face folders, for the CLI and loaders (specs are paths)."""
    from tiny import save_tiny_models

    return save_tiny_models(tmp_path_factory.mktemp("tiny-models"))
