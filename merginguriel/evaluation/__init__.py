"""Evaluation: any checkpoint on any locale's split (evaluate.py) and the NxN transfer matrix (nxn.py)."""
