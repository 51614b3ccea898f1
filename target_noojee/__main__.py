"""`python -m target_noojee` runs the target."""

from target_noojee.target import cli

cli()
