"""`abcjax compile`: does a config fit a TPU slice? Answered on any machine, before renting one.

JAX compiles for chips it does not have: with libtpu installed (the `tpu` extra),
`jax.experimental.topologies.get_topology_desc` describes every chip of a slice as a compile-only
device. abcjax builds its usual mesh over them (every chip of every host) and compiles, ahead of
time, the very programs a run executes: the train step with the real optimizer and shardings, the
eval step over the real validation split, and the sampler's chunk loop. Each compiled program
states the bytes it needs per chip (arguments, outputs, temporaries), which is what decides
whether a run fits in HBM; a program that cannot fit does not compile, and says why. JAX's CUDA
plugin compiles for NVIDIA GPUs the same way (accelerators.TOPOLOGIES lists both).

Beside the measured memory, abcjax.roofline estimates how fast the slice could at best train and
sample. Nothing is executed, and nothing is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
from jax._src import cloud_tpu_init
from jax.experimental import topologies

from abcjax import corpus, data, parallel, roofline, sample, steps
from abcjax.accelerators import GIB, Topology, find_topology
from abcjax.errors import AbcjaxError, first_line
from abcjax.model import CharLstm, ModelConfig

TPU_EXTRA = f"pip install -e '.[tpu]' in the abcjax checkout (or pip install 'jax[tpu]=={jax.__version__}')"
CUDA_PLUGIN = f"pip install 'jax[cuda12-local]=={jax.__version__}'"
# How libtpu is loaded to compile only. It looks for the TPU VM it runs on in the first two, and
# prints five lines of warnings without them (the slice compiled for is given explicitly, so they
# change nothing else). And it takes /tmp/libtpu_lockfile unless told that several loads are fine:
# a compile-only load touches no chip, so it need not fail where another process holds the lock
# (one training on this TPU VM, or any JAX that tried its TPU backend here).
LIBTPU_COMPILE_ONLY = {
    "TPU_ACCELERATOR_TYPE": "v5litepod-8",
    "TPU_WORKER_HOSTNAMES": "localhost",
    "ALLOW_MULTIPLE_LIBTPU_LOAD": "1",
}


@dataclasses.dataclass(frozen=True)
class Program:
    """One compiled program's bytes per chip (XLA's memory analysis), or why it did not compile."""

    name: str
    seconds: float
    argument: int = 0
    output: int = 0
    alias: int = 0  # outputs written over donated arguments (the train state)
    temp: int = 0
    code: int = 0
    out_of_memory: str | None = None  # the compiler's message when it does not fit

    @property
    def transient(self) -> int:
        """Bytes it needs beyond its arguments while it runs."""
        return self.output - self.alias + self.temp + self.code

    @property
    def peak(self) -> int:
        return self.argument + self.transient


def load_devices(topology: Topology) -> list:
    """The compile-only devices of every chip of the slice; a one-line error naming what to install."""
    if topology.is_tpu:
        if cloud_tpu_init.get_tpu_library_path() is None:
            raise AbcjaxError(f"compiling for {topology.name} needs libtpu: {TPU_EXTRA}")
        for variable, value in LIBTPU_COMPILE_ONLY.items():
            os.environ.setdefault(variable, value)
    try:
        return topologies.get_topology_desc(platform=topology.platform, **topology.options).devices
    except NotImplementedError:  # no PJRT plugin registered for the platform
        raise AbcjaxError(
            f"compiling for {topology.name} needs JAX's CUDA plugin, which registers without a GPU only under "
            f"JAX_PLATFORMS=cpu (abcjax compile sets it): {CUDA_PLUGIN}"
        ) from None
    except Exception as error:  # libtpu of another JAX version, or a plugin that fails to start
        install = TPU_EXTRA if topology.is_tpu else CUDA_PLUGIN
        raise AbcjaxError(f"could not load {topology.name}'s compiler ({first_line(error)}): {install}") from None


def compile_for_topology(config: ml_collections.ConfigDict, topology_name: str, num_tunes: int) -> dict:
    """Compiles the train step, eval step and sampler of `config` for the slice `topology_name`, the
    sampler with `num_tunes` slots; returns the report (JSON-able): memory per chip, compile seconds,
    whether it fits, and the analytic ceilings."""
    topology = find_topology(topology_name)
    if config.model.lstm == "cudnn":
        raise AbcjaxError(
            "model.lstm=cudnn runs only on NVIDIA GPUs, and compiles only on one (cuDNN sizes its workspace as "
            "the program is traced): compile with --config.model.lstm=fused, the same model and results"
        )
    mesh = parallel.make_mesh(load_devices(topology))
    parallel.check_divisible(config.train.batch_size, mesh, "train.batch_size")
    parallel.check_divisible(num_tunes, mesh, "--num_tunes")
    dataset = data.make_dataset(
        corpus.read_corpus(config.data.path).tunes,
        config.data.seq_length,
        config.data.val_fraction,
        config.seed,
        config.data.path,
        config.data.transpose,
    )
    model = CharLstm(ModelConfig.from_config(config, dataset.vocab.size))
    tx = steps.make_optimizer(config)
    state = _placed(jax.eval_shape(lambda: steps.create_train_state(model, tx, config.seed)), parallel.replicated(mesh))
    hosts = len({device.process_index for device in mesh.devices.flat})
    _say(
        f"compiling for {topology.name} ({topology.sold_as}): {mesh.devices.size} {topology.chip.name} chips "
        f"on {_count(hosts, 'host')}"
    )
    with _compiling_afresh():
        train_step = steps.make_train_step(model, tx, config, mesh)
        programs = [
            _compile("train step", train_step, state, _placed(dataset.train_tokens, parallel.replicated(mesh))),
            *_eval_program(model, mesh, dataset, config, state.params),
            _sampler_program(model, mesh, dataset.vocab, num_tunes, state.params),
        ]
    shapes = roofline.Shapes(
        model.config,
        config.data.seq_length,
        config.train.batch_size // mesh.devices.size,
        num_tunes // mesh.devices.size,
    )
    return _report(topology, mesh.devices.size, hosts, programs, state, shapes)


def _report(
    topology: Topology, chips: int, hosts: int, programs: list[Program], state, shapes: roofline.Shapes
) -> dict:
    num_params = sum(leaf.size for leaf in jax.tree_util.tree_leaves(state.params))
    return {
        "topology": topology.name,
        "accelerator": topology.sold_as,
        "chip": topology.chip.name,
        "chips": chips,
        "hosts": hosts,
        "hbm_bytes_per_chip": topology.chip.hbm_bytes,
        "dtype": jnp.dtype(shapes.model.dtype).name,
        "parameters": num_params,
        "train_windows_per_chip": shapes.rows_per_chip,
        "sample_slots_per_chip": shapes.slots_per_chip,
        "programs": {program.name: dataclasses.asdict(program) for program in programs},
        **_verdict(programs, state, topology.chip.hbm_bytes, shapes),
        "estimate": roofline.estimate(shapes, num_params, topology.chip, chips),
    }


def _placed(tree, sharding):
    """Shapes and dtypes of `tree` (arrays or jax.eval_shape's), placed as a run places them."""
    return jax.tree_util.tree_map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding), tree)


def _eval_program(model, mesh, dataset, config, params) -> list[Program]:
    """The eval step over the whole validation split, as training evaluates; none without one."""
    if len(dataset.val_tokens) < 2:
        return []
    batches = data.make_eval_batches(dataset.val_tokens, config.data.seq_length, config.train.batch_size)
    arrays = _placed((batches.inputs, batches.targets, batches.weights), parallel.rows_split(mesh, axis=1))
    return [_compile("eval step", steps.make_eval_step(model, mesh), params, *arrays)]


def _sampler_program(model, mesh, vocab, num_tunes: int, params) -> Program:
    """The largest chunk `abcjax sample --batch_size NUM_TUNES` compiles, at sample's default options."""
    options = sample.SamplingOptions()
    rows = num_tunes * sample.TUNES_PER_SLOT
    key = jax.eval_shape(lambda: jax.random.PRNGKey(0))
    inputs = (
        jax.ShapeDtypeStruct((rows, options.max_length), jnp.int32),  # primes
        jax.ShapeDtypeStruct((rows,), jnp.int32),  # their lengths
        jax.ShapeDtypeStruct((rows, *key.shape), key.dtype),  # the tunes' keys
    )
    sampler = sample.make_chunk_sampler(model, mesh, options, vocab.char2idx["\n"], num_tunes)
    return _compile("sampler", sampler, params, *_placed(inputs, parallel.rows_split(mesh)))


def _compile(name: str, function, *arguments) -> Program:
    """Lowers and compiles `function` for the arguments' shapes and shardings; an out-of-memory
    verdict from the compiler is a result, any other failure a bug that propagates."""
    _say(f"compiling the {name}...")
    started = time.perf_counter()
    try:
        compiled = function.lower(*arguments).compile()
    except jax.errors.JaxRuntimeError as error:
        if "RESOURCE_EXHAUSTED" not in str(error):
            raise
        seconds = time.perf_counter() - started
        _say(f"the {name} ran out of memory (after {seconds:.1f}s)")
        return Program(name, seconds, out_of_memory=first_line(error))
    seconds = time.perf_counter() - started
    memory = compiled.memory_analysis()
    _say(f"compiled the {name} in {seconds:.1f}s")
    return Program(
        name,
        seconds,
        argument=memory.argument_size_in_bytes,
        output=memory.output_size_in_bytes,
        alias=memory.alias_size_in_bytes,
        temp=memory.temp_size_in_bytes,
        code=memory.generated_code_size_in_bytes,
    )


def _verdict(programs: list[Program], state, hbm: int, shapes: roofline.Shapes) -> dict:
    """Bytes per chip of a training run and of a sampling run, whether each fits, and what to lower.

    Training keeps the train state, the training text and the validation split on every chip, and
    runs the train and eval steps in turn; `abcjax sample` holds only the sampler.
    """
    found = {program.name: program for program in programs}
    train, evaluate, sampler = found["train step"], found.get("eval step"), found["sampler"]
    state_bytes = _nbytes(state)
    params_bytes = _nbytes(state.params)
    training_programs = [program for program in (train, evaluate) if program]
    validation = evaluate.argument - params_bytes if evaluate else 0
    training = train.argument + validation + max(program.transient for program in training_programs)
    training_compiled = not any(program.out_of_memory for program in training_programs)
    # The model is too big where the bytes a program keeps on every chip whatever the batch take half of it.
    smaller_model = (
        f"model.hidden_size (parameters {_size(params_bytes)} per chip, {_size(state_bytes)} with Adam's moments)"
    )
    too_big = []
    if training > hbm or not training_compiled:
        too_big.append(
            smaller_model if state_bytes > hbm / 2 else f"train.batch_size ({shapes.rows_per_chip} windows per chip)"
        )
    if sampler.out_of_memory or sampler.peak > hbm:
        too_big.append(
            smaller_model if params_bytes > hbm / 2 else f"--num_tunes ({shapes.slots_per_chip} tunes per chip)"
        )
    return {
        "training_bytes_per_chip": training if training_compiled else None,
        "sampling_bytes_per_chip": None if sampler.out_of_memory else sampler.peak,
        "fits": not too_big,
        "lower": list(dict.fromkeys(too_big)),
    }


def _nbytes(tree) -> int:
    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree_util.tree_leaves(tree))


@contextlib.contextmanager
def _compiling_afresh():
    """Without the persistent compilation cache: the seconds reported are XLA's own, and programs
    for chips this machine lacks stay out of the user's cache."""
    enabled = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        yield
    finally:
        jax.config.update("jax_enable_compilation_cache", enabled)


def _say(message: str) -> None:
    """Progress on stderr, so that --json keeps stdout for the report."""
    print(message, file=sys.stderr, flush=True)


def format_report(report: dict) -> str:
    """The report as aligned lines: the slice, bytes per chip and compile time of each program, the
    verdict, and the ceilings."""
    hbm, estimate = report["hbm_bytes_per_chip"], report["estimate"]
    lines = [
        f"{report['topology']} ({report['accelerator']}): {report['chips']} {report['chip']} chips on "
        f"{_count(report['hosts'], 'host')}, {_size(hbm)} HBM each",
        f"model.dtype={report['dtype']}, {report['parameters']:,} parameters; per chip "
        f"{report['train_windows_per_chip']} training windows, {report['sample_slots_per_chip']} sampling slots",
        f"{'per chip':<11}{'arguments':>12}{'outputs':>12}{'temporaries':>12}{'code':>12}{'peak':>12}{'compile':>9}",
    ]
    for name, fields in report["programs"].items():
        program = Program(**fields)
        if program.out_of_memory:
            lines.append(f"{name:<11}does not fit: {program.out_of_memory}")
            continue
        sizes = (program.argument, program.output - program.alias, program.temp, program.code, program.peak)
        lines.append(f"{name:<11}" + "".join(f"{_size(size):>12}" for size in sizes) + f"{program.seconds:>8.1f}s")
    lines += [
        _verdict_line(report, hbm),
        f"ceilings of the slice, analytic (docs/tpu-compile.md), at {estimate['matmul_peak_tflops']:.0f} TFLOP/s "
        f"and {estimate['hbm_bandwidth_gbps']:.0f} GB/s per chip:",
        f"  training {_rate(estimate, 'train_compute')} compute-bound "
        f"({_si(estimate['train_flops_per_char'], 'FLOP')}/char as run, "
        f"{_si(estimate['model_flops_per_char'], 'FLOP')} by 6 x matmul weights), "
        f"{_rate(estimate, 'train_bandwidth')} bandwidth-bound ({_si(estimate['train_bytes_per_char'], 'B')}/char)",
        f"  sampling {_rate(estimate, 'sample_compute')} compute-bound "
        f"({_si(estimate['sample_flops_per_char'], 'FLOP')}/char), "
        f"{_rate(estimate, 'sample_bandwidth')} bandwidth-bound ({_si(estimate['sample_bytes_per_char'], 'B')}/char)",
    ]
    return "\n".join(lines)


def _verdict_line(report: dict, hbm: int) -> str:
    """fits / does not fit, the bytes per chip of a training and of a sampling run, and what to lower."""
    training, sampling = report["training_bytes_per_chip"], report["sampling_bytes_per_chip"]
    tunes = report["sample_slots_per_chip"] * report["chips"]
    needs = [
        f"training needs {_size(training)} of {_size(hbm)} per chip"
        if training is not None
        else "training runs out of memory",
        f"sampling {tunes} tunes at once {_size(sampling)}"
        if sampling is not None
        else f"sampling {tunes} tunes at once runs out of memory",
    ]
    if report["fits"]:
        return "fits: " + ", ".join(needs)
    return f"does not fit: {', '.join(needs)}: lower " + " or ".join(report["lower"])


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("s" if number != 1 else "")


def _size(size: int) -> str:
    return f"{size / GIB:.2f} GiB" if size >= GIB else f"{size / 2**20:.1f} MiB"


def _rate(estimate: dict, bound: str) -> str:
    return f"{_si(estimate[bound + '_bound_chars_per_sec'], '')} chars/s"


def _si(value: float, unit: str) -> str:
    """3 significant figures with a decimal prefix: 26.98e6 FLOP -> '27.0 MFLOP'."""
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{' ' if unit else ''}{prefix}{unit}"
    return f"{value:.3g}{' ' if unit else ''}{unit}"
