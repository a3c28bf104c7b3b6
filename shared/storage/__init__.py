"""The only code that talks to AWS (DynamoDB, S3). Maps AWS faults to shared.errors."""
