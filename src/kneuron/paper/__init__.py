"""The paper's modules and tables over runs: Table 1, LIKN (Module 2) and Table 2, DKN (Module 3) and Table 3,
their statistics (stats), the paper's verdicts (findings), reproduce and its report.

One rule for the steps over a `locate` run: ``<noun>_from_run(handle, run_dir, ...) -> <Result>``, the noun
being what the paper calls the step (table1, likn, table2, dkn, table3; factcheck: Table 3 beside baselines;
cas_effect: CAS neurons against the per-query and union sets, on erasure and update (ICLR 2025);
no handle where no model is needed: likn). The result is a dataclass with ``.to_json()`` (what the CLI prints
and `reproduce` keeps), ``.save(dir)`` (atomically, through kneuron.store) and the classmethod ``.load(dir)``.
A step writes nothing itself: ``.save`` does, except the resumable ones: ``dkn_from_run`` commits each fact's
row as it is found and its summary at the end, ``factcheck_from_run`` each scored item, ``cas_effect_from_run``
each fact's row.
The functions below them work on what is in memory and are named for what they
compute: ``stats.table1(arrays)``, ``table1_of(effects)``, ``table2(effects)``, ``language_independent``,
``find_dkn(handle, prompt, ...)``, ``fact_check(facts, ...)``.
"""
from kneuron.paper.cas_effect import CasEffectConfig, CasEffectReport, cas_effect_from_run
from kneuron.paper.dkn import DKNConfig, DKNRun, dkn_from_run
from kneuron.paper.factcheck import FactCheckBaselines, factcheck_from_run
from kneuron.paper.likn import LIKNResult, likn_from_run
from kneuron.paper.table1 import Evaluation, table1_from_run
from kneuron.paper.table2 import CrossLingual, table2_from_run
from kneuron.paper.table3 import FactCheck, table3_from_run

__all__ = ["CasEffectConfig", "CasEffectReport", "CrossLingual", "DKNConfig", "DKNRun", "Evaluation", "FactCheck",
           "FactCheckBaselines", "LIKNResult", "cas_effect_from_run", "dkn_from_run", "factcheck_from_run",
           "likn_from_run", "table1_from_run", "table2_from_run", "table3_from_run"]
