"""The pipeline runner behind `dasd run`: its schema (`config`), the plan of steps (`plan`), one step's
fingerprint, markers and `run_step` (`step`), where steps run (`local`, `slurm`) and the closing table
(`summary`). Nothing here imports the stages: a step names its stage by module and config class."""
