"""kneuron.attribution.methods: IG and AMIG carry their options (one name per knob; params() round trips
through make_method; a method is a frozen value)."""
import pytest

from kneuron.attribution import AMIG, IG, make_method
from kneuron.errors import ConfigError


def test_methods_carry_their_options():
    """One name per knob: the object's field, params() (a run's method_options), make_method's options."""
    m = AMIG(paths="per-word", prefactor="difference")
    assert m.params() == {"paths": "per-word", "prefactor": "difference", "normalize": False}
    assert make_method("amig", **m.params()) == m and make_method(m) is m
    assert make_method("amig") == AMIG() and make_method("ig") == IG() and IG().params() == {}
    assert m.proper() and not AMIG().proper()
    with pytest.raises(ConfigError, match="prefactor_kind"):
        make_method("amig", prefactor_kind="difference")         # the old name is gone
    with pytest.raises(ConfigError, match="no options"):
        make_method("ig", paths="mean")
    with pytest.raises(ConfigError, match="method object"):
        make_method(AMIG(), paths="mean")
    with pytest.raises(ConfigError, match="prefactor"):
        AMIG(prefactor="nope")
    with pytest.raises(Exception):
        m.paths = "mean"                                          # frozen: a method is a value

