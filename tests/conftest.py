"""Shared test setup: never touch the Hugging Face Hub."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
