"""`python tests/fsdp2_on_cpu.py <dasd arguments>` under `accelerate launch` with an FSDP config: dasd on
accelerate's real FSDP path, on CPU processes joined over gloo.

accelerate chooses FSDP only for accelerator devices: with `cpu=True` (the Trainer's `use_cpu`, which dasd sets
without CUDA) its `AcceleratorState.__init__` settles on MULTI_CPU and drops the FSDP plugin (accelerate 1.15
`state.py`: the FSDP branch sits under the MULTI_GPU/… device types). This lifts that one gate, as that branch
would set it — the distributed type, on the accelerator state and the partial state it is re-read from — so
everything else runs as on GPUs: `fully_shard` (torch FSDP2 on a gloo CPU mesh), sharded DCP checkpoints,
the Trainer's `save_model`, accelerate's `get_state_dict`.
"""

import sys

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

_init = AcceleratorState.__init__


def _init_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    _init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin


AcceleratorState.__init__ = _init_fsdp_on_cpu

from dasd.cli import main  # noqa: E402

sys.exit(main())
