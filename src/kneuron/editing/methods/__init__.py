"""The editing methods, one frozen dataclass each (hyper-parameters as fields, capabilities as class
attributes); ``editing.registry`` lists them by name.

    kn, kn-eai, kn-erase, likn,  kn.py       value vectors of the fact's knowledge neurons
    likn-transfer
    kn-opt                       kn_opt.py   the same vectors, optimised on ROME's objective
    rome                         rome.py     rank-one update of one layer's MLP output projection
    ft-l, ft-m (ft: ft-m's old name)  ft.py  L∞-bounded fine-tuning of that projection: ROME's FT-L (the
                                 object read at the last prompt position), EasyEdit's FT-M (teacher-forced)
    memit                        memit.py    many rewrites at once, least squares spread over several layers
    alphaedit                    alphaedit.py  MEMIT's update in the null space of the preserved keys
                                 joint.py    what the two share (targets, the layer spread, JointEdit);
                                 keys.py     reading keys and residuals at the subject
"""
from .alphaedit import AlphaEdit
from .ft import FT, FtL, FtM
from .kn import KN, LIKN, KnEai, KnErase, LiknTransfer, NeuronMethod, erase_relation
from .kn_opt import KnOpt
from .joint import JointEdit
from .memit import MEMIT
from .rome import ROME, RomeEdit, choose_layer

__all__ = ["FT", "FtL", "FtM", "KN", "LIKN", "MEMIT", "AlphaEdit", "JointEdit", "KnEai", "KnErase", "KnOpt",
           "LiknTransfer", "NeuronMethod", "ROME", "RomeEdit", "choose_layer", "erase_relation"]
