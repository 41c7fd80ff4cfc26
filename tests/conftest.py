from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/: the shared helpers (``from helpers.x import ...``)
sys.path.insert(0, str(Path(__file__).parent / "deploy"))  # test_deploy: its fixtures are shared by other stages' tests

ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``LIGHTNETS_DATA`` or ../shared/data beside the checkout."""
    return Path(os.environ.get("LIGHTNETS_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set LIGHTNETS_DATA)")
    return path


@pytest.fixture(autouse=True, scope="session")
def _decode_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Folder datasets decode into a cache (lightnets.data.decode_cache): keep the tests' caches out of ~/.cache."""
    if "LIGHTNETS_CACHE_DIR" not in os.environ:
        os.environ["LIGHTNETS_CACHE_DIR"] = str(tmp_path_factory.mktemp("decode-cache"))
