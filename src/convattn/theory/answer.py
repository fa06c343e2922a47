"""Everything `convattn theory` reports, as one JSON-ready dict.

The Markdown is laid out from this dict by templates/theory.md.j2 (and by the report's
Q1 and Q2 sections), so the dict is also what results.json keeps of the theory stage.
"""

from __future__ import annotations

import math

from convattn.theory import STUDY_CNN, STUDY_INPUT, STUDY_MLP
from convattn.theory.attention import attention_checks
from convattn.theory.equivariance import equivariance_checks
from convattn.theory.stack import analyse_stack


def answer(input_shape: tuple[int, int, int] = STUDY_INPUT, stack: str | None = None, seed: int = 0,
           strict: bool = False) -> dict:
    """Q1.1-Q1.3 and Q2.1; with `stack`, also that stack on `input_shape` (strict: must tile)."""
    cnn = analyse_stack(STUDY_INPUT, STUDY_CNN)
    mlp = analyse_stack(STUDY_INPUT, STUDY_MLP)
    pool = next(r for r in cnn["layers"] if r["kind"] == "pool")
    cnn["pool_output_shape"] = pool["output_shape"]
    cnn["flatten_features"] = math.prod(pool["output_shape"])
    result = {
        "cnn": cnn, "mlp": mlp,
        "ratio": round(mlp["total_params"] / cnn["total_params"], 2),
        "attention": attention_checks(seed),
        "equivariance": equivariance_checks(seed),
    }
    if stack is not None:
        result["stack"] = analyse_stack(input_shape, stack, strict)
    return result
