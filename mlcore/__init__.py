"""The fall-detection pipeline: data, image cache, model, training engine, tracking and jobs."""

__version__ = "0.1.0"
