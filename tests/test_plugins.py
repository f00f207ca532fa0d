"""Other packages add methods through register_imgsim_methods, exactly as the built-ins do."""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from datasette.cli import cli

from datasette_imgsim.hookspecs import hookimpl
from datasette_imgsim.methods import Features, Method
from datasette_imgsim.plugins import get_method, get_methods, pm


def mean_colour(images):
    return Features(np.stack([img.reshape(-1, 3).mean(axis=0) for img in images]).astype(np.float32))


class MeanColourPlugin:
    @hookimpl
    def register_imgsim_methods(self):
        return [Method(name="meancolour", dims=3, element_type="float", metric="l2",
                       extract=mean_colour, min_size=16, description="average colour")]


@pytest.fixture
def plugin():
    instance = MeanColourPlugin()
    pm.register(instance, name="test-meancolour")
    yield instance
    pm.unregister(name="test-meancolour")


def test_builtins_come_through_the_hook():
    assert {"histogram", "hog", "phash", "cnn"} <= set(get_methods())
    assert "datasette_imgsim.builtin" in dict(pm.list_name_plugin())


def test_a_plugin_method_indexes_and_searches(plugin, path_db):
    assert get_method("meancolour").dims == 3
    runner = CliRunner()
    result = runner.invoke(cli, ["imgsim", "index", str(path_db), "--table", "photos", "--column", "path",
                                 "--method", "meancolour", "--workers", "2"])
    assert result.exit_code == 0 and "9 indexed" in result.output, result.output
    result = runner.invoke(cli, ["imgsim", "status", str(path_db), "--json"])
    (status,) = json.loads(result.output)
    assert status["method"] == "meancolour" and status["metric"] == "l2" and status["indexed"] == 9
    listing = runner.invoke(cli, ["imgsim", "methods"]).output
    assert "meancolour" in listing


def test_method_contract_is_checked():
    with pytest.raises(ValueError, match="element_type"):
        Method(name="x", dims=8, element_type="int", metric="l2", extract=mean_colour)
    with pytest.raises(ValueError, match="divisible by 8"):
        Method(name="x", dims=7, element_type="bit", metric="hamming", extract=mean_colour)
    assert Method(name="x", dims=8, element_type="bit", metric="l2", extract=mean_colour).metric == "hamming"
