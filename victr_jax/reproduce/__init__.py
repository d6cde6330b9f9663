"""victr-reproduce: the paper's protocols planned as ordinary runs of the shipped configs,
run one after another, and tabulated beside the published numbers.

  plan.py    the runs of a protocol (zero-shot, few-shot, base-to-novel, Kinetics-400,
             Charades) and their `python -m victr_jax.main` commands
  table.py   our numbers (mean ± sample std, n) beside published.json's
  cli.py     the command line: run, resume, dry run
"""
