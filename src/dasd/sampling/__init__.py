"""What `dasd sample`, `dasd eval` and `dasd mix` generate with: the generation loop and its requests (`generation`),
the temperature probe (`temperature_probe`), the first-responses checks (`response_checks`), mixed-policy's budget and
cut (`mixing`), and the caches of generations (`sample_cache`, `eval_cache`)."""
