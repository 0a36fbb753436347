"""Choices and defaults of the metrics, shared by the query functions and their callers."""

MODES = ("origin", "english-topk", "group-topk")  # feature selection modes of A(L, l)
STATS = ("max", "mean")  # pooled statistic: act_max or act_mean
LAPE_KINDS = ("features", "neurons")
DEFAULT_K = 16  # english-topk: features per group
DEFAULT_TOP_RATE = 0.01  # LAPE: share of units selected (Tang et al.'s current code)
DEFAULT_FILTER_RATE = 0.95  # LAPE: percentile of all p for the filter and the bar
