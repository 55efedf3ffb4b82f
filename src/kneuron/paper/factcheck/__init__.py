"""Fact-checking beside real baselines (issue 23): Table 3's true / false items scored four ways, each
evaluated on held-out facts and on held-out relations, per language.

An item is Table 3's (``table3.items_for``): a fact's first prompt with its true object (label 1) or one
wrong object of its relation (label 0, ``table3.wrong_object``). Its scores:

  dkn    the mean attribution (the run's locate method) of p(candidate) over the DKN set: Table 3's score
  kn     the same over the knowledge-neuron set: the refined neurons of the training facts, kept by
         Table 3's count rule (found more than int(t x the most frequent one's count) times)
  logp   the model's own log p(candidate | prompt)
  probe  a logistic regression on the hidden state (a block's output) at the statement's last token,
         one probe per layer fit on the training items, the layer of the best validation AUROC kept

Two splits of the same items, facts (Table 3's) and relations (whole relations held out); on each,
everything is tuned on validation only and the test is scored once: AUROC with a bootstrap interval over
facts, and the verdicts at the validation threshold.

    res = factcheck_from_run(handle, run_dir, lang, load_dkn(run_dir))   # -> FactCheckBaselines
    res.save(run_dir); res.table()

The modules, in the order a check runs:

    plan.py        the splits (RelationSplit, split_relations), the items and every neuron set, fixed
                   before any model call (Plan, plan_check); check_held_out, the guard against a leak
    items.py       each item's model scores (mean attribution per neuron set, log p) as rows: the long
                   step, resumable in <run>/factcheck-<lang>.jsonl
    probe.py       the hidden state at the statement's last token; the probe (fit_probe, choose_layer)
    evaluation.py  every scorer on each split: t, thresholds and the probe's layer tuned on validation
    results.py     ScorerResult, SplitResult, FactCheckBaselines: the typed result, its file and its table
    check.py       the whole check of one language: in memory (fact_check_beside) or over a locate run
                   (factcheck_from_run, with run_langs and load_dkn)
"""
from kneuron.paper.factcheck.check import fact_check_beside, factcheck_from_run, load_dkn, run_langs
from kneuron.paper.factcheck.evaluation import SCORERS, auroc_interval, evaluate, evaluate_split, result
from kneuron.paper.factcheck.items import ROW_KEY, ROW_NEED, Rows, item_key, item_means, item_records, score_items
from kneuron.paper.factcheck.plan import (PARTS, POOLED, REL_TEST, REL_VAL, SPLITS, Plan, RelationSplit,
                                          check_disjoint, check_held_out, plan_check, scope, set_name, split_relations)
from kneuron.paper.factcheck.probe import L2, Probe, choose_layer, fit_probe, hidden_states, statement_state
from kneuron.paper.factcheck.results import FactCheckBaselines, ScorerResult, SplitResult, stem

__all__ = ["L2", "PARTS", "POOLED", "REL_TEST", "REL_VAL", "ROW_KEY", "ROW_NEED", "SCORERS", "SPLITS",
           "FactCheckBaselines", "Plan", "Probe", "RelationSplit", "Rows", "ScorerResult", "SplitResult",
           "auroc_interval", "check_disjoint", "check_held_out", "choose_layer", "evaluate", "evaluate_split",
           "fact_check_beside", "factcheck_from_run", "fit_probe", "hidden_states", "item_key", "item_means",
           "item_records", "load_dkn", "plan_check", "result", "run_langs", "scope", "score_items", "set_name",
           "split_relations", "statement_state", "stem"]
