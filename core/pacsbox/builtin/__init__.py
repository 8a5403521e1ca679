"""Built-in job types (modify/anonymize, split/merge), registered like any plugin."""
