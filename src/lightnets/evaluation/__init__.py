"""The evaluation stage: metrics, the HTML / CSV report, prediction and ``evaluate_checkpoint`` (``predict``),
and the evaluation of deployed files (``deployed``, ``deployed_report``)."""
