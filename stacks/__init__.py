"""CDK constructs and the ChurnOps stack (see app.py and docs/deploy.md)."""
