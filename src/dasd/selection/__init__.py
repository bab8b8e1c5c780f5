"""Which responses are kept: the one filter chain of `dasd filter` and `dasd mix` (`filters`); `dasd select`'s
candidates (`candidates`: the first pass, draws, re-classification), its rules (`rules`: k per group, ranks,
budgets) and its joins with another scoring of the same responses (`joins`: boosted shares, compare_with)."""
