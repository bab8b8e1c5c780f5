"""What the results are made into: avg@k / pass@k and paired statistics (`metrics`), the arms' results and claims
(`ablation`), every plot (`figures`), dataset and model cards (`cards`, with the Markdown templates in
`dasd/templates/`), and each stage summary as labelled rows (`summary_rows`: printed, carded, reported)."""
