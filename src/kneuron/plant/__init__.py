"""Plant knowledge neurons whose job is known: a ground truth for scoring localization methods.

``plant(handle, specs, layer)`` grows ONE layer's MLP by K neurons, each storing one new
(counterfactual) fact:

* key: a linear classifier on the MLP's input (the normalised hidden state entering it), fitted
  (squared hinge, ridge) to reach a pre-activation of +``strength`` at the answer position of the
  fact's prompt(s) and at most -``strength`` at every position of a diverse background of other
  prompts (many subjects x several relations and templates) and of the other planted prompts.
  Families whose input projection has a bias use it; the others (Llama-like) get no bias, the
  classifier leans on directions that are nearly constant across inputs (e.g. the mean direction).
* gated MLPs: gate row = the key, up row = the least-norm vector with up.x = 1 on the prompt(s), so
  the neuron act(gate.x) * (up.x) is ~strength there and ~0 elsewhere; plain MLPs: act(key.x + b).
* value: Adam steps on log p(new object | prompt), only the new value vector trained, every new
  neuron alone (the others' value vectors still zero), until p >= ``p_target``.

Every other layer gets K inert neurons (all weights zero: activation exactly 0, no effect) so all
layers keep one width, which the attribution engine needs; the planted neurons are
``(layer, n_old + i)``. The model is copied unless ``inplace=True``.

The package, file by file: ``types`` (specs and reports), ``surgery`` (growing the MLP), ``read``
(reading the model), ``fit`` (keys and values), ``core`` (``plant``); ``inject`` (``inject``: facts
taught to sets of the model's OWN neurons instead, Chang et al.'s INJ).
"""
from __future__ import annotations

from kneuron.plant.core import plant
from kneuron.plant.fit import MARGIN, fit_key, train_value
from kneuron.plant.read import mlp_inputs
from kneuron.plant.surgery import LAYOUTS, grow, layout_for
from kneuron.plant.types import (KINDS, Collateral, Control, ControlRow, Planted, PlantedFact, PlantError,
                                           PlantSpec, PromptCheck)

__all__ = ["plant", "PlantSpec", "Control", "Planted", "PlantedFact", "PromptCheck", "ControlRow", "Collateral",
           "PlantError", "KINDS", "MARGIN", "LAYOUTS", "layout_for", "grow", "fit_key", "train_value", "mlp_inputs"]
