"""arc-ttft: ARC-AGI with small LLMs and test-time fine-tuning."""

__version__ = "0.1.0"
