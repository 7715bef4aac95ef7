"""One very large system across several devices: the tokens sharded, the keys all-gathered."""

import equinox as eqx
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .._types import Points, Scalar
from ._attention import AbstractDotProductAttention, FromProjected, Projected
from ._blockwise import BLOCK, check_block_size

AXIS = "tokens"


class Sharded(FromProjected):
    """`attention` (Softmax or Unnormalized, any `Q, K, V`, causal or not) evaluated with the
    tokens split across `devices` (default: all of them), so that `n` grows with the devices.

    Inside `jax.shard_map`, each device holds `n / D` tokens (its queries), gathers the keys and
    values of all `n` tokens (`all_gather`, `O(n d)` memory per device, never `O(n^2)`) and runs
    the blockwise attention of its queries against them (`blockwise_attention` with the
    queries' offset for the causal mask). Derivatives go through the same code (the transpose of
    the gather is a reduce-scatter). The result equals the single-device one to rounding.

    `n` must be a multiple of the number of devices. Place the tokens sharded with `put(x0)` so
    that the state itself, and everything elementwise in the field (projection, normalization,
    the solver's stages), is split too; `simulate(PostLN(Sharded(Softmax(beta))), put(x0), ...)`.
    """

    attention: AbstractDotProductAttention
    mesh: Mesh = eqx.field(static=True)
    block: int = eqx.field(static=True)

    def __init__(self, attention: AbstractDotProductAttention, devices=None, block: int = BLOCK):
        """Shard `attention` across `devices`.

        Arguments:
            attention: a `Softmax` or `Unnormalized` kernel.
            devices: a non-empty sequence of `jax.Device` objects (`jax.devices()[:2]`,
                `jax.devices("gpu")`), or `None` for all of `jax.devices()`. Anything else is a
                `ValueError`, a string too: a platform name such as `"cpu"` is not read as
                `jax.devices("cpu")` (one meaning for the argument); write that call.
            block: the block size of the blockwise attention on each device.
        """
        if not (isinstance(attention, AbstractDotProductAttention) and attention._blockwise):
            raise ValueError(
                "attention must be a Softmax or Unnormalized kernel to be sharded; "
                f"got {type(attention).__name__}"
            )
        expected = "devices must be None or a sequence of jax.Device objects"
        if isinstance(devices, str):
            raise ValueError(
                f"{expected}; got the string {devices!r} (for the devices of a platform, pass "
                f"jax.devices({devices!r}))"
            )
        try:
            devices = jax.devices() if devices is None else list(devices)
        except TypeError:  # not a sequence, a single Device included
            raise ValueError(f"{expected}; got {devices!r:.80} (one device: [device])") from None
        if not devices:
            raise ValueError("devices must hold at least one device; got none")
        others = [device for device in devices if not isinstance(device, jax.Device)]
        if others:
            raise ValueError(f"{expected}; got {others[0]!r:.80} among them")
        self.attention = attention
        self.mesh = Mesh(np.asarray(devices), (AXIS,))
        self.block = check_block_size(block)

    @property
    def sharding(self) -> NamedSharding:
        """Tokens split along `n` across the devices."""
        return NamedSharding(self.mesh, PartitionSpec(AXIS))

    def put(self, x: Points) -> Points:
        """`x` placed with its tokens split across the devices."""
        return jax.device_put(x, self.sharding)

    def projected(self, t: Scalar, x: Points) -> Projected:
        self.check(x)

        def local(x_local):
            tokens = jax.lax.all_gather(x_local, AXIS, tiled=True)
            offset = jax.lax.axis_index(AXIS) * x_local.shape[0]
            block = min(self.block, x_local.shape[0])
            return self.attention._projected(x_local, tokens, block, offset)

        spec = PartitionSpec(AXIS)
        return jax.shard_map(  # the scans' carries start replicated: no replication check
            local, mesh=self.mesh, in_specs=spec, out_specs=spec, check_vma=False
        )(x)

    def check(self, x: Points) -> None:
        self.attention.check(x)
        devices = self.mesh.size
        if x.shape[0] % devices:
            raise ValueError(
                f"the number of tokens must be a multiple of the {devices} devices the "
                f"attention is sharded across; got x of shape {x.shape}"
            )
