"""What `dasd train` runs: a stage's SFT file tokenized once and packed into a cached Arrow dataset (`data`), and the
SFT data, loss and saving for TRL (`sft`); the loss weights `dasd build-sft` writes for it (`weighting`)."""
