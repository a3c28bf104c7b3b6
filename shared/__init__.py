"""shop-recs shared package: domain rules and storage used by every Lambda function.

Layers: ``shared.api`` (HTTP glue shared by handlers), domain modules (pure Python, no boto3:
``events``, ``catalog``, ``users``, ``ingestion``) and ``shared.storage`` (the only code that
talks to AWS).
"""
