"""What `dasd score` and `dasd provenance` compute: a model's log-prob of every token (`token_scorers`) and the
token → sentence assignment, sentence means and classes (`sentence_scores`)."""
