"""Evaluation harness (issue 6): the thesis's experiments E1–E8 on real faces.

splits (identity-disjoint PSP / public / FR sets) -> context (trained PSP sources, attackers) ->
exp_* (one function per experiment) -> report (results.json, report.md, plots). CLI: ``hyperobf eval``.
"""
