"""One process of the two-process test: load sharded across hosts, run, gather, export."""
import os
import sys

process_id, port, folder, out_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from sparta_jax import sharding  # noqa: E402
from sparta_jax.models.export import export_merged  # noqa: E402
from sparta_jax.models.loading import from_pretrained  # noqa: E402

sharding.initialize_distributed(f"localhost:{port}", num_processes=2, process_id=process_id)
assert jax.process_count() == 2 and jax.device_count() == 4 and jax.local_device_count() == 2
mesh = sharding.make_mesh({"data": 1, "fsdp": 2, "tensor": 2})
model, _ = from_pretrained(folder, dtype=np.float32, mesh=mesh, load_tokenizer=False)
assert not model.layers.q_proj[...].is_fully_addressable  # really split across the two hosts

ids = np.arange(24).reshape(4, 6) % 100 + 1
graphdef, state = nnx.split(model)
logits = jax.jit(lambda s, i: nnx.merge(graphdef, s)(i))(state, ids)
full = multihost_utils.process_allgather(logits, tiled=True)
export_merged(model, os.path.join(out_dir, "exported"))
if process_id == 0:
    np.save(os.path.join(out_dir, "logits.npy"), np.asarray(full))
multihost_utils.sync_global_devices("done")
