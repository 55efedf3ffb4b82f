"""attribute(handle, prompt, target, *, method=IG() | AMIG(...), ...) -> Attribution: a score for every neuron.

What is computed (the method object with its options, steps, objective, rule) is separate from how
(``Execution``: batch size, caches, sharing, precision, progress). The package, file by file:
``api`` (attribute / attribute_many), ``methods`` (IG, AMIG; the registry), ``local`` (activation,
gradient, activation x gradient, random) and ``mask`` (a learned mask): the baselines, no path;
``quadrature`` (integration rules),
``execution``; the engine: ``plan`` + ``budget`` (rows per batch), ``passes`` (clean pass, objective),
``rows``, ``kvcache`` + ``prefix`` (key/value caches), ``runner`` (the hooked forward), ``checks``
(run-time checks of the fast paths), ``integrate`` (rows -> batches -> sums)."""
from __future__ import annotations

from kneuron.attribution.api import Attribution, attribute, attribute_many, check_settings
from kneuron.attribution.execution import PRECISIONS, Execution
from kneuron.attribution.methods import AMIG, BASELINES, IG, METHODS, make_method
from kneuron.attribution.passes import OBJECTIVES
from kneuron.attribution.quadrature import RULES

__all__ = ["Attribution", "attribute", "attribute_many", "check_settings", "make_method", "Execution", "METHODS",
           "PRECISIONS", "RULES", "OBJECTIVES", "IG", "AMIG", "BASELINES"]
