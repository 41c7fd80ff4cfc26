"""Evaluation metrics: top-k accuracy, confusion matrix, per-class precision / recall / F1.

Pure functions that take numpy arrays or torch tensors and return data (ints, arrays, dicts, dataclasses);
plotting and the HTML report live in ``lightnets.evaluation.report``.  The code lives in one module per job,
all re-exported here: ``classification`` (top-k accuracy, confusion matrix), ``per_class`` (precision / recall /
F1 tables, most confused pairs), ``result`` (``EvalResult``, ``Misclassified``), ``accumulator`` (batch-by-batch
evaluation) and ``metric_csv`` (the CSV files and their parsers).

Conventions used throughout:

- Accuracies are fractions in [0, 1], not percentages.
- ``k`` in top-k is clipped to the number of classes, so "top-5" of a 3-class problem is top-3 (always 1.0).
- Confusion matrices are ``int64`` with rows = true class and columns = predicted class.
- Zero division gives 0.0: a class that is never predicted has precision 0.0, a class with no samples has
  recall 0.0, and F1 = 2 TP / (2 TP + FP + FN) is 0.0 when TP + FP + FN = 0 (scikit-learn's
  ``zero_division=0``).  Macro averages are taken over *all* classes, including ones absent from the data.
- The evaluation loss is the plain cross-entropy of the logits (no label smoothing), averaged per sample.
"""

from .accumulator import Accumulator, evaluate_logits
from .classification import ArrayLike, accuracy, confusion_matrix, topk_correct
from .metric_csv import confusion_matrix_csv, parse_confusion_matrix_csv, parse_per_class_csv, per_class_csv
from .per_class import most_confused, per_class_metrics
from .result import EvalResult, Misclassified

__all__ = [
    "Accumulator",
    "ArrayLike",
    "EvalResult",
    "Misclassified",
    "accuracy",
    "confusion_matrix",
    "confusion_matrix_csv",
    "evaluate_logits",
    "most_confused",
    "parse_confusion_matrix_csv",
    "parse_per_class_csv",
    "per_class_csv",
    "per_class_metrics",
    "topk_correct",
]
