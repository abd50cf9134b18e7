"""What OST is compared with: random, full, the proxy's loss, IFD, the paper's plain step, an oracle
(`scores`), an LLM judge (`judge`) and a DEITA-style complexity × quality score (`deita`).

Every scorer returns `Scores` (one number per pool id, higher = keep) with its cost; the cheap ones are
re-exported here (`baselines.loss_scores(...)`).
"""
from ost.baselines.scores import (
                                  Scores,
                                  answer_losses,
                                  forward_flops,
                                  full,
                                  ifd_scores,
                                  loss_scores,
                                  oracle_clean,
                                  oracle_scores,
                                  ost_paper_scores,
                                  random_scores,
                                  train_flops,
)

__all__ = ["Scores", "answer_losses", "forward_flops", "full", "ifd_scores", "loss_scores", "oracle_clean",
           "oracle_scores", "ost_paper_scores", "random_scores", "train_flops"]
