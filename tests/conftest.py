import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory):
    """A tiny base and nudger saved as Hugging Face folders, for the CLI and loaders (specs are paths)."""
    from tiny import byte_level_tokenizer, metaspace_tokenizer, tiny_llama

    root = tmp_path_factory.mktemp("tiny-models")
    folders = {}
    for name, tokenizer, seed, positions in [
        ("base", metaspace_tokenizer(), 2, 1024),
        ("nudger", byte_level_tokenizer(), 5, 1024),
        ("short", byte_level_tokenizer(), 6, 24),
    ]:
        model = tiny_llama(tokenizer, seed=seed, eos_logit_scale=1.4 if name == "nudger" else 1.0, max_positions=positions)
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        folders[name] = str(root / name)
    return folders
