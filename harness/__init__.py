"""harness: does fine-tuning beat prompting for this task and this base model?"""

__version__ = "0.1.0"
