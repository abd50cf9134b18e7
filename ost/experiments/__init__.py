"""Experiments on top of the method: the SFT grid of subsets × protocols × seeds (`sft_grid`), proxy →
target transfer (`transfer`), the warm-up curve, the training regime, and the credibility checks.
The top layer: nothing in the package imports it but the CLI.
"""
