"""Orbax checkpoints under WORKDIR/checkpoints: the train state, with its config and vocabulary.

Each step's folder holds three items: `state` (params, optimizer state, step, RNG), and `config`
and `vocab` as JSON, so a checkpoint alone is enough to sample from and the model never travels
without its vocabulary. Orbax writes to a temporary folder and renames it when complete, so a
crash mid-save never leaves a checkpoint that is taken as complete.
"""

from __future__ import annotations

import jax
import orbax.checkpoint as ocp
from etils import epath
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from abcjax import storage
from abcjax.errors import AbcjaxError, first_line


class Checkpoints:
    """Save every N steps, keep the last K, restore the latest (or a chosen) step."""

    def __init__(self, workdir: str | epath.PathLike, keep: int | None = None, read_only: bool = False):
        self.directory = storage.as_path(workdir) / "checkpoints"
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only, read_only=read_only)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, state, config: dict, vocab: dict) -> None:
        """Starts writing the checkpoint of `state.step` (in the background; `close` waits for it)."""
        step = int(state.step)
        if step in self._manager.all_steps():
            return
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config), vocab=ocp.args.JsonSave(vocab)
            ),
            force=True,
        )

    def close(self) -> None:
        """Finishes pending writes and stops Orbax's background workers."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _check_step(self, step: int | None) -> int:
        available = self.steps()
        if not available:
            raise AbcjaxError(f"no checkpoint in {self.directory}: train a model there first with abcjax train")
        if step is None:
            return max(available)
        if step not in available:
            raise AbcjaxError(f"no checkpoint for step {step} in {self.directory}: the steps saved are {available}")
        return step

    def restore_metadata(self, step: int | None = None) -> tuple[int, dict, dict]:
        """(step, config, vocab) of a checkpoint, latest by default, without reading the arrays."""
        step = self._check_step(step)
        items = self._restore(step, config=ocp.args.JsonRestore(), vocab=ocp.args.JsonRestore())
        return step, items.config, items.vocab

    def restore_state(self, step: int, target, mesh: Mesh):
        """The saved state, laid out like `target` (a state of the same model) replicated on `mesh`.

        The device count may differ from the one that saved it.
        """
        return self._restore(step, state=ocp.args.StandardRestore(_replicated(target, mesh))).state

    def restore_params(self, step: int, target_params, mesh: Mesh):
        """Only the parameters of the saved state, laid out like `target_params` replicated on `mesh`.

        All that sampling needs: Adam's moments, twice the parameters' size, stay on disk.
        """
        item = {"params": _replicated(target_params, mesh)}
        restore_args = ocp.checkpoint_utils.construct_restore_args(item)
        args = ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True)
        return self._restore(step, state=args).state["params"]

    def _restore(self, step: int, **items):
        try:
            return self._manager.restore(step, args=ocp.args.Composite(**items))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise AbcjaxError(
                f"checkpoint {self.directory / str(step)} could not be read ({first_line(error)}): "
                "delete that folder to fall back to an earlier step, or use a new --workdir"
            ) from None


def _replicated(target, mesh: Mesh):
    """Abstract arrays shaped like `target`'s, each replicated over `mesh`: what Orbax restores into."""
    replicated = NamedSharding(mesh, P())
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), target)
