"""kneuron.errors: every expected error shares one base (KneuronError) and keeps its old base; bad settings
anywhere are ConfigErrors."""
from __future__ import annotations

import pytest
import torch

from kneuron.errors import ConfigError, KneuronError, MissingDependencyError
from kneuron.models.load import ModelLoadError


# ----------------------------------------------------------------------------- expected errors vs bugs

def test_expected_errors_share_one_base():
    from kneuron.facts import FactError
    from kneuron.facts.templates import QueryError
    from kneuron.models.sites import SiteError
    from kneuron.plant import PlantError
    from kneuron.runs.ray import RayError
    from kneuron.runs.store import RunStoreError
    for cls, old_base in ((FactError, ValueError), (QueryError, ValueError), (SiteError, ValueError),
                          (ModelLoadError, ValueError), (PlantError, ValueError), (RunStoreError, RuntimeError),
                          (RayError, RuntimeError), (ConfigError, ValueError), (MissingDependencyError, ImportError)):
        assert issubclass(cls, KneuronError) and issubclass(cls, old_base), cls


def _bad_settings():
    from kneuron.attribution import make_method
    from kneuron.attribution.quadrature import nodes
    from kneuron.plant.counterfactuals import plant_counterfactuals
    from kneuron.neurons import select
    from kneuron.organisms.train import OrganismConfig, train_organism
    from kneuron.paper.dkn import DKNConfig
    from kneuron.paper.likn import language_independent
    from kneuron.paper.reproduce import ReproduceConfig
    from kneuron.runs.locate import LocateConfig
    yield lambda: make_method("nope")
    yield lambda: make_method("ig", paths="mean")
    yield lambda: nodes("left", 0)
    yield lambda: nodes("nope", 4)
    yield lambda: nodes("trapezoid", 1)
    yield lambda: select(torch.ones(2, 3), 1.5)
    yield lambda: LocateConfig(steps=0).validate()
    yield lambda: LocateConfig(objective="nope").validate()
    yield lambda: LocateConfig(threshold=2.0).validate()
    yield lambda: DKNConfig(top_n=1).validate()
    yield lambda: DKNConfig(t_low=0.5, t_high=0.2).validate()
    yield lambda: ReproduceConfig(model="m", facts="f", langs=()).validate()
    yield lambda: ReproduceConfig(model="m", facts="f", steps=0).validate()
    yield lambda: train_organism([], OrganismConfig(kind="nope"))
    yield lambda: language_independent({}, set(), langs=("en",))
    yield lambda: plant_counterfactuals(None, k=0)


@pytest.mark.parametrize("case", range(16))
def test_bad_settings_are_config_errors(case):
    """Expected problems are ConfigError (caught by the CLI, still a ValueError for library callers)."""
    fn = list(_bad_settings())[case]
    with pytest.raises(ConfigError) as e:
        fn()
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value)
