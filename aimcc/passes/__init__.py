"""Every transformation, one pass per file; :data:`PASSES` names them for pipelines."""

from xdsl.passes import ModulePass

from aimcc.passes.fuse_bias import FuseBiasPass
from aimcc.passes.head_split import HeadSplitPass
from aimcc.passes.lora_slots import LoraSlotsPass
from aimcc.passes.lower_cluster import LowerClusterPass
from aimcc.passes.partition import PartitionPass
from aimcc.passes.place import PlacePass
from aimcc.passes.raise_transformer import RaiseTransformerPass
from aimcc.passes.replicate import ReplicatePass
from aimcc.passes.schedule import SchedulePass
from aimcc.passes.split import SplitPass
from aimcc.passes.tile import TilePass

# In pipeline order: what `aimcc MODEL.onnx` runs after import, and what `aimcc opt` accepts.
PASSES: dict[str, type[ModulePass]] = {
    p.name: p
    for p in (
        RaiseTransformerPass,
        LoraSlotsPass,
        PartitionPass,
        TilePass,
        FuseBiasPass,
        PlacePass,
        HeadSplitPass,
        LowerClusterPass,
        SplitPass,
        ReplicatePass,
        SchedulePass,
    )
}
