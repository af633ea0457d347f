"""The browser test's page: a minimal txt2img tab around T-SAM's UI."""
