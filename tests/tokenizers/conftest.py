"""Released-layout tokenizer directories, generated once per session."""

from __future__ import annotations

import pytest

from model_plugin.configuration import register_configs
from model_plugin.families import FAMILIES
from model_plugin.tokenizer import write_released_tokenizer


@pytest.fixture(scope="session", autouse=True)
def _registered(tmp_path_factory):
    # Conversions are cached per session, never in the user's HF cache.
    import os

    os.environ["INTERNVL_TOKENIZER_CACHE"] = str(tmp_path_factory.mktemp("tokenizer-cache"))
    register_configs()


@pytest.fixture(scope="session")
def released_dir(tmp_path_factory):
    made: dict[tuple[str, bool | None], object] = {}

    def get(family: str, add_dummy_prefix: bool | None = None):
        key = (family, add_dummy_prefix)
        if key not in made:
            out = tmp_path_factory.mktemp(family.replace("/", "-"))
            write_released_tokenizer(FAMILIES[family].tiny(), out, add_dummy_prefix=add_dummy_prefix)
            made[key] = out
        return made[key]

    return get
