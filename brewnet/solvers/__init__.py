"""Solvers: the Step loop (base.py), lr policies, and the six update rules."""
