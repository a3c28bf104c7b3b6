"""Run shop-recs on one machine: DynamoDB Local, tables and routes from template.yaml, demo data."""
