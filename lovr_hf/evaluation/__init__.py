"""Stages captions/clips/videos -> embeddings -> rankings -> results: models, families, protocols, scoring.

The stage's library API, importable from the package as before the layout move (``from lovr_hf.evaluation import
EvalConfig, evaluate_model, evaluate_models``); everything else is imported from the module it lives in.
"""

from lovr_hf.evaluation.run import evaluate_model, evaluate_models
from lovr_hf.evaluation.scoring import EvalConfig

__all__ = ["EvalConfig", "evaluate_model", "evaluate_models"]
