import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("STUDY_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def e5_small():
    """The converted offline e5-small spec (built into the cache on first use)."""
    from study.models import get_spec, model_path

    spec = get_spec("e5-small")
    model_path(spec)
    return spec


@pytest.fixture(scope="session")
def tiny():
    from study.models import get_spec

    return get_spec("tiny")


@pytest.fixture(scope="session")
def synonym_file():
    path = SHARED_DATA / "synonyms" / "counterfitted_neighbors.json.gz"
    if not path.is_file():
        pytest.skip(f"reference synonym file not found at {path} (set STUDY_SHARED_DATA)")
    return path
