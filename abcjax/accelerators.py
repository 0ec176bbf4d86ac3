"""The accelerators `abcjax compile` compiles for: each chip's memory and speed, and the slices they
come in, named as JAX's compile-only topologies name them (v5e:4x4) or as Cloud TPU sells them
(v5litepod-16).

The figures are the vendors' published peaks per chip (Cloud TPU's system-architecture pages,
NVIDIA's H100 datasheet): what the analytic ceilings of abcjax.roofline are computed from, and
what a compiled program's memory is measured against. They are data, not measurements.
"""

from __future__ import annotations

import dataclasses

from abcjax.errors import AbcjaxError

GIB = 2**30
TERA = 1e12
GIGA = 1e9


@dataclasses.dataclass(frozen=True)
class Chip:
    """One chip (a JAX device) as its vendor states it."""

    name: str
    hbm_bytes: int
    hbm_bandwidth: float  # bytes/s
    bfloat16_flops: float  # peak matmul FLOP/s on bfloat16 inputs, dense
    # Peak matmul FLOP/s on float32 inputs, by JAX's matmul precision (jax_default_matmul_precision):
    # a TPU runs 1, 3 or 6 bfloat16 passes; an NVIDIA GPU TF32 tensor cores or plain float32 units.
    float32_flops: dict[str, float]


def _tpu(name: str, hbm_gib: int, bandwidth_gbps: float, bfloat16_tflops: float) -> Chip:
    peak = bfloat16_tflops * TERA
    passes = {"default": peak, "high": peak / 3, "highest": peak / 6}
    return Chip(name, hbm_gib * GIB, bandwidth_gbps * GIGA, peak, passes)


TPU_V4 = _tpu("TPU v4", 32, 1200, 275)
TPU_V5E = _tpu("TPU v5e", 16, 819, 197)
TPU_V5P = _tpu("TPU v5p", 95, 2765, 459)
TPU_V6E = _tpu("TPU v6e", 32, 1640, 918)
# H100 SXM 80GB: the memory a device reports (79.1 GiB), 3.35 TB/s, dense bf16 989 TFLOP/s,
# TF32 495 (JAX's default and "high" for float32 on GPU), float32 67 ("highest").
H100 = Chip(
    "H100 SXM",
    84_929_347_584,
    3350 * GIGA,
    989 * TERA,
    {"default": 495 * TERA, "high": 495 * TERA, "highest": 67 * TERA},
)

# What XLA's GPU compiler needs to know of a GPU it cannot see: a real H100 SXM's, as quoted in
# jax-ml/jax issue 28376 (CUDA 12.8).
H100_TARGET_CONFIG = """
gpu_device_info {
  threads_per_block_limit: 1024 threads_per_warp: 32 shared_memory_per_block: 49152
  shared_memory_per_core: 233472 threads_per_core_limit: 2048 core_count: 132 fpus_per_core: 128
  block_dim_limit_x: 2147483647 block_dim_limit_y: 65535 block_dim_limit_z: 65535
  memory_bandwidth: 3352320000000 l2_cache_size: 52428800 clock_rate_ghz: 1.98
  device_memory_size: 84929347584 shared_memory_per_block_optin: 232448
  cuda_compute_capability { major: 9 } registers_per_core_limit: 65536 registers_per_block_limit: 65536
}
platform_name: "CUDA"
dnn_version_info { major: 9 minor: 7 }
runtime_version { major: 12 minor: 8 }
device_description_str: "NVIDIA H100 80GB HBM3"
"""


@dataclasses.dataclass(frozen=True)
class Topology:
    """A slice: its chips, and how JAX makes compile-only devices for it."""

    name: str  # the name abcjax compile takes, e.g. "v5e:4x4"
    sold_as: str  # the accelerator type to create (launch/tpu_vm.sh --accelerator), or the machine
    chip: Chip
    platform: str  # "tpu" or "cuda": the PJRT plugin that compiles for it
    options: dict  # keyword arguments of jax.experimental.topologies.get_topology_desc

    @property
    def is_tpu(self) -> bool:
        return self.platform == "tpu"


def _tpu_slice(name: str, sold_as: str, chip: Chip, chips_per_host: tuple[int, int, int]) -> Topology:
    """A Cloud TPU slice. v4 and v5p chips hold two TensorCores that JAX drives as one device
    ("megacore"); v5e and v6e chips hold one. A host (VM) drives `chips_per_host` chips."""
    megacore = chip in (TPU_V4, TPU_V5P)
    options = dict(
        topology_name=name,
        chip_config_name="megacore" if megacore else "default",
        chips_per_host_bounds=chips_per_host,
        num_slices=1,
        wrap=(False, False, False),
    )
    return Topology(name, sold_as, chip, "tpu", options)


def _gpu_hosts(name: str, sold_as: str, chip: Chip, target_config: str, hosts: int, per_host: int) -> Topology:
    options = dict(target_config=target_config, topology=f"1x{hosts}x{per_host}")
    return Topology(name, sold_as, chip, "cuda", options)


# One host drives 4 chips (2x2x1), except the 8-chip v5e and v6e VMs, which are one host of 2x4.
TOPOLOGIES = {
    topology.name: topology
    for topology in (
        _tpu_slice("v4:2x2x1", "v4-8", TPU_V4, (2, 2, 1)),
        _tpu_slice("v4:2x2x2", "v4-16", TPU_V4, (2, 2, 1)),
        _tpu_slice("v4:2x2x4", "v4-32", TPU_V4, (2, 2, 1)),
        _tpu_slice("v5e:2x2", "v5litepod-4", TPU_V5E, (2, 2, 1)),
        _tpu_slice("v5e:2x4", "v5litepod-8", TPU_V5E, (2, 4, 1)),
        _tpu_slice("v5e:4x4", "v5litepod-16", TPU_V5E, (2, 2, 1)),
        _tpu_slice("v5e:4x8", "v5litepod-32", TPU_V5E, (2, 2, 1)),
        _tpu_slice("v5p:2x2x1", "v5p-8", TPU_V5P, (2, 2, 1)),
        _tpu_slice("v5p:2x2x2", "v5p-16", TPU_V5P, (2, 2, 1)),
        _tpu_slice("v6e:2x2", "v6e-4", TPU_V6E, (2, 2, 1)),
        _tpu_slice("v6e:2x4", "v6e-8", TPU_V6E, (2, 4, 1)),
        _tpu_slice("v6e:4x4", "v6e-16", TPU_V6E, (2, 2, 1)),
        _gpu_hosts("h100:1x8", "a3-highgpu-8g", H100, H100_TARGET_CONFIG, 1, 8),
        _gpu_hosts("h100:2x8", "a3-highgpu-8g x2", H100, H100_TARGET_CONFIG, 2, 8),
    )
}


def find_topology(name: str) -> Topology:
    """The topology called `name` (v5e:4x4) or sold as `name` (v5litepod-16); a one-line error
    listing the known ones otherwise."""
    for topology in TOPOLOGIES.values():
        if name in (topology.name, topology.sold_as):
            return topology
    raise AbcjaxError(f"unknown topology {name!r}: give one of {known_topologies()}")


def known_topologies() -> str:
    """Every topology's name and what it is sold as, for help texts and errors."""
    return ", ".join(f"{topology.name} ({topology.sold_as})" for topology in TOPOLOGIES.values())
