"""findistill: distil an LLM's financial-sentiment judgement into a small, fast classifier."""

__version__ = "0.1.0"
