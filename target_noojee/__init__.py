"""target-noojee: a Singer target that loads leads into Noojee Contact."""

__version__ = "0.1.0"
