"""Drawing the characters the constraint allows, judging the whole vocabulary only where it must.

The sampler draws a character as the first maximum of its (filtered) logit plus Gumbel noise; under
the constraint's mask, the draw is the first allowed character in the order of those noisy logits.
Most of the time a trained model's own choice is allowed, and then it is the masked draw. So each
slot's choice is judged alone, and only the slots whose choice is refused have their whole vocabulary
judged, a few slots at a time. The character drawn is exactly the masked draw's: what
`sample.categorical` gives for the logits with every disallowed character at -inf, for the same key.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from abcjax import abc_constraint as constraint
from abcjax.abc_grammar import Tables

_GROUP = 16  # slots whose whole vocabulary is judged at once


def first_max(noisy: jax.Array) -> jax.Array:
    """The index of the first largest value (of the first NaN, if any) along the last axis, as
    argmax finds it, with a max and a min, which XLA:CPU runs faster than argmax's reduction."""
    first_of = (noisy == noisy.max(axis=-1, keepdims=True)) | jnp.isnan(noisy)
    vocab = noisy.shape[-1]
    return jnp.min(jnp.where(first_of, jnp.arange(vocab), vocab), axis=-1)


def draw(tables: Tables, prepared: constraint.Prepared, noisy: jax.Array, sampling: jax.Array):
    """The allowed character of largest noisy logit for each slot: (tokens [slots], stuck [slots]);
    stuck where the reader allows nothing (never, if the reader is right). `noisy` [slots, vocab] is
    the filtered logits plus Gumbel noise; `prepared` the slots' readers, prepared; slots not
    `sampling` (priming) are not judged."""
    choice = first_max(noisy)
    allowed = jax.vmap(lambda slot, char: constraint.verdicts(tables, slot, char[None])[0])(prepared, choice)
    needy = sampling & ~allowed
    slots = needy.shape[0]
    group = min(_GROUP, slots)

    def judge_group(state):
        tokens, needy, stuck = state
        index = jnp.nonzero(needy, size=group, fill_value=slots)[0]
        taken = jnp.minimum(index, slots - 1)
        masks = jax.vmap(lambda slot: constraint.verdicts(tables, slot))(
            jax.tree_util.tree_map(lambda field: field[taken], prepared)
        )
        chosen = first_max(jnp.where(masks, noisy[taken], -jnp.inf))
        return (
            tokens.at[index].set(chosen, mode="drop"),
            needy.at[index].set(False, mode="drop"),
            stuck.at[index].set(~jnp.any(masks, axis=-1), mode="drop"),
        )

    state = (choice, needy, jnp.zeros_like(needy))
    tokens, _, stuck = jax.lax.while_loop(lambda state: jnp.any(state[1]), judge_group, state)
    return tokens, stuck


def draw_all(tables: Tables, prepared: constraint.Prepared, noisy_of) -> tuple[jax.Array, jax.Array]:
    """As draw, judging every slot's whole vocabulary: `noisy_of(masks)` [slots, vocab] are the noisy
    logits given the masks, for the top-k and top-p filters, which depend on what is allowed."""
    masks = jax.vmap(lambda slot: constraint.verdicts(tables, slot))(prepared)
    return first_max(noisy_of(masks)), ~jnp.any(masks, axis=-1)
