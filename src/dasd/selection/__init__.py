"""Which responses are kept: the one filter chain of `dasd filter` and `dasd mix` (`filters`)."""
