"""dasd — Distribution-Aligned Sequence Distillation toolkit."""

__version__ = "0.1.0"
