"""llm2labels: zero-shot label vocabularies for image segmentation from vision-language models."""

__version__ = "0.1.0"
