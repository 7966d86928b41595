import pytest
from helpers import FIXTURES


@pytest.fixture(scope="session")
def e5_small():
    """The converted offline e5-small spec (built into the cache on first use)."""
    from study.models.registry import get_spec, model_path

    spec = get_spec("e5-small")
    model_path(spec)
    return spec


@pytest.fixture(scope="session")
def tiny():
    from study.models.registry import get_spec

    return get_spec("tiny")


@pytest.fixture(scope="session")
def synonym_file():
    """The reference code's counter-fitted neighbour file (gzip of the released JSON)."""
    path = FIXTURES / "synonyms" / "counterfitted_neighbors.json.gz"
    assert path.is_file(), f"the counter-fitted neighbour file is missing at {path}"
    return path


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    from helpers import free_port, start_mlflow_server, stop

    server, uri = start_mlflow_server(tmp_path_factory.mktemp("mlflow"), free_port())
    yield uri
    stop(server)


@pytest.fixture(scope="session")
def smoke_experiment(mlflow_server, tmp_path_factory):
    """Two real smoke studies in one experiment: tiny (an XLM-R architecture; 2 workers per trial; arms plain and
    vme-tuned: 3 search trials of vme-tuned, modalities searched, then 2 confirm seeds per arm) and tiny-bert (a BERT
    architecture; arms plain and vme-reference, 2 confirm seeds each, no search). tiny-bert's confirm runs carry the
    alignment probe (the pocket suite's default), tiny's do not (--no-alignment-probe). Tests of the study and of the
    report read the same experiment; the sockets each study's processes listened on are listed meanwhile."""
    from helpers import communicate_watching_listeners, start_study

    storage = tmp_path_factory.mktemp("studies")
    outputs, listeners = {}, {}
    for model, extra in (("tiny", ["--workers", "2", "--arms", "plain,vme-tuned", "--trials", "3",
                                   "--no-alignment-probe"]),
                         ("tiny-bert", ["--arms", "plain,vme-reference"])):
        process = start_study(*extra, "--seeds", "2", "--storage", str(storage), "--mlflow-uri", mlflow_server,
                              "--experiment", "e2e", model=model)
        outputs[model], listeners[model] = communicate_watching_listeners(process)
        assert process.returncode == 0, outputs[model][-3000:]
    return {"uri": mlflow_server, "experiment": "e2e", "outputs": outputs, "listeners": listeners,
            "storage": storage}
