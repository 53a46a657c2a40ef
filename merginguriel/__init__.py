"""merginguriel: cross-lingual model merging for MASSIVE intent classification."""

__version__ = "0.1.0"
