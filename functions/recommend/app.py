"""Recommend function: deployed with its routes, answering 501 until it is built."""

from shared.api import planned_handler

lambda_handler = planned_handler("recommendations, similar items, ranking and popular items")
