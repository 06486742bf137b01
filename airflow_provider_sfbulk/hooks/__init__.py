"""The Salesforce Bulk API 2.0 hooks: one blocking, one asyncio, over one sans-IO protocol."""
