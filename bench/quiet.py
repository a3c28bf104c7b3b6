"""Benchmarks print their results only.

Handlers called in-process write what Lambda would send to CloudWatch: Powertools prints the
cold-start metric as EMF JSON to stdout even with POWERTOOLS_METRICS_DISABLED, and warns on stderr
when a call had no metric to publish. Neither is a result.
"""

from __future__ import annotations

import os
import warnings


def quiet_handlers() -> None:
    from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

    os.environ.update({"POWERTOOLS_METRICS_DISABLED": "true", "POWERTOOLS_TRACE_DISABLED": "true",
                       "POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_METRICS_NAMESPACE": "Bench"})
    AmazonCloudWatchEMFProvider.add_cold_start_metric = lambda self, context: None  # type: ignore[method-assign]
    warnings.filterwarnings("ignore", message="No application metrics to publish")
