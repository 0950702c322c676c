"""Title: Masks for padded sequences: where Keras keeps them, where it drops them, a portable form.

In short:
    token_ids = keras.Input((None,), dtype="int32")
    mask = keras.layers.Lambda(lambda ids: tf.not_equal(ids, 0))(token_ids)  # made once, here
    x = keras.layers.Embedding(1000, 16)(token_ids)  # no mask_zero: no mask attached yet
    x = keras.layers.Concatenate()([x, other_features])  # join before any mask is attached
    x = keras.layers.LSTM(16, return_sequences=True)(x, mask=mask)  # passed by hand
    pooled = keras.layers.GlobalAveragePooling1D()(x, mask=mask)  # again, whatever came between
    # Your own layer: def call(self, inputs, mask=None): return masked_mean(inputs, mask)
    print(keras_mask(x))  # the mask Keras attached to x, or None where it was dropped

Problem: Sequences of different lengths are padded to one length, and a mask tells the layers
which steps are padding: `Masking()` (steps whose features all equal `mask_value`) or
`Embedding(..., mask_zero=True)` (token id 0) attach it to their output, and each layer that
supports masking uses it and passes it on. When it works, padding changes nothing: an LSTM
gives the same result for a sequence padded to 8 steps as for the sequence alone, and
`GlobalAveragePooling1D` averages the real steps only. When a layer on the way drops the mask,
nothing fails: the model trains on the padding as if it were data, and the only sign is a
warning on Keras 3 ("does not support masking and will therefore destroy the mask
information") or, for an operator such as `x * 2.0` or a `Concatenate` with an unmasked input
on Keras 3.12 and later, no sign at all. Which layers drop it differs between Keras 2 and
Keras 3 and between Keras 3 releases, and Keras' main branch after 3.15.1 makes RNN layers
stop passing it on (keras-team/keras#23235).

Recipe:
    1. Make the mask once from the inputs, `tf.not_equal(token_ids, 0)` in a `Lambda`, and
       pass it by keyword (`mask=mask`) to every layer that should respect it: LSTM/GRU,
       pooling, attention. An explicit `mask=` is used on every stack, whatever the layers in
       between did with the mask Keras attached.
    2. In your own layer take `call(self, inputs, mask=None)` and use it, for example with
       `masked_mean(inputs, mask)`, the mean over the unmasked steps. Set
       `self.supports_masking = True` only if the layer keeps the time axis and should pass
       the mask on (see keras3_custom_layer_rules).
    3. To see where an attached mask was lost, ask `keras_mask(tensor)` for each layer's
       output: it returns the mask Keras attached to an eager or symbolic tensor, or None.

Pitfalls:
    - Masked steps change nothing, on every stack: after `Embedding(mask_zero=True)`, an LSTM
      and a GRU given sequences of 1 to 6 tokens padded with zeros to 8 steps return what a
      NumPy LSTM and GRU with the same weights compute over the tokens alone (within 1e-5),
      and `GlobalAveragePooling1D` returns the NumPy mean of the real tokens' embedding rows
      (within 1e-6).
    - The mask reaches, and leaves, `Dense`, `Dropout` and a custom layer that sets
      `supports_masking = True`: the pooling after them averages the unmasked steps only, on
      every stack.
    - A `Lambda`, a `Reshape`, an operator (`x * 2.0`) and a custom layer without
      `supports_masking = True` drop the mask on every stack: the pooling after them averages
      all steps, padding included. A custom layer whose `call` takes `mask` still receives it.
    - Passing `mask=` by hand to LSTM and `GlobalAveragePooling1D` (`portable_pooling_model`:
      embeddings joined with unmasked features by `Concatenate`, then the LSTM, then a
      `Lambda`) gives the mean over the unmasked steps on every stack, and the LSTM's outputs
      on the real steps are the same padded and unpadded (within 1e-5).
    - `masked_mean(values, mask)` equals the NumPy mean over the unmasked steps (within 1e-4),
      is 0 for a row without unmasked steps, and raises ValueError naming the argument for a
      wrong rank, a missing mask or mismatched shapes. `keras_mask(tensor)` returns the mask
      attached to an `Embedding(mask_zero=True)` output (exactly `ids != 0`) and None after
      `Flatten`.

Versions:
    - `Embedding(mask_zero=True)` and an unmasked input joined by `Concatenate()` (the
      feature axis): Keras 2 (2.12 to 2.15, tf-keras 2.16 to 2.21) keeps the mask, and the
      pooling averages the unmasked steps. Keras 3.0 to 3.3 and 3.12 and later: the pooling
      averages all steps, and nothing warns (from 3.4 `Concatenate` merges the masks with
      "any" over the features, so the unmasked input makes every step count). Keras 3.4 to
      3.11: calling the model raises ValueError "Attempt to convert a value (None) with an
      unsupported type" (keras-team/keras#21581, fixed in 3.12 by keras-team/keras#21611).
    - Two masked inputs joined by `Concatenate()`: Keras 2 and Keras 3.12 and later keep the
      mask; Keras 3.0 to 3.3 drop it (the pooling averages all steps); Keras 3.4 to 3.11 raise
      the same ValueError when the model is called.
    - A masked and an unmasked input joined along the steps, `Concatenate(axis=1)`: Keras 2
      raises ValueError "Dimension 0 in both shapes must be equal" when the model is built;
      Keras 3.0 to 3.3 drop the mask; Keras 3.4 to 3.11 raise ValueError "Attempt to convert
      a value (None)" when it is called; Keras 3.12 and later give the mean over the
      unmasked steps of both parts.
    - `Add()` of masked inputs: Keras 2 and Keras 3.4 and later keep the mask; Keras 3.0 to
      3.3 drop it (keras-team/keras#18416, fixed by keras-team/keras#19685).
    - A `Lambda`, a `Reshape` and a custom layer without `supports_masking = True` after a
      masked input: Keras 3 warns UserWarning "... does not support masking and will
      therefore destroy the mask information"; Keras 2 says nothing. An operator
      (`x * 2.0`) drops the mask without a warning on every stack.
    - A custom layer called on a list of two masked inputs gets a list of both masks in
      `call(self, inputs, mask=None)` on every stack. With `**kwargs` in the signature,
      `call(self, inputs, mask=None, **kwargs)`, Keras 3.0 passes `mask=None`
      (keras-team/keras#19311); Keras 2 and Keras 3.1 and later pass both masks.
    - An LSTM given `mask=` by keyword attaches it to its output on Keras 2 and on Keras
      3.11 and later; Keras 3.0 to 3.10 attach none. On Keras 3.11 a `Concatenate` of that
      output and an unmasked input is the masked-and-unmasked `Concatenate` above, which
      raises, so `portable_pooling_model` joins its inputs before the LSTM.
    - LSTM and GRU with `return_sequences=True` pass the mask on to the next layer on Keras 2
      and on Keras 3 up to 3.15.1, the newest release. Keras' main branch stops that after
      3.15.1 (keras-team/keras#23235: RNN layers, `Bidirectional` and `TimeDistributed` set
      `supports_masking = False`); no release carries it yet, and the test of this behaviour
      fails with "new outcome" on the first release that does. The explicit `mask=` of the
      recipe does not depend on it.

Sources: Keras guide "Understanding masking & padding"
    (keras.io/guides/understanding_masking_and_padding: mask-generating layers,
    `supports_masking`, `compute_mask`, "writing layers that need mask information");
    keras-team/keras#19311 (Keras 3.0.5: a custom layer with two masked inputs receives
    `mask=None`); keras-team/keras#18416 (operators and `Add`/`Maximum` drop masks on
    Keras 3); keras-team/keras#19685 (Keras 3.4: merge layers keep masks, `Concatenate` merges
    them with "any" over the features instead of "all"; operators still drop them);
    keras-team/keras#21611 (`Concatenate` of a masked and an unmasked symbolic input, fixing
    keras-team/keras#21581); keras-team/keras#23235 (on Keras' main branch after 3.15.1, RNN
    layers, `Bidirectional` and `TimeDistributed` set `supports_masking = False` and stop
    passing the mask on).

See also:
    - keras3_custom_layer_rules: `call(..., mask=None)` and `*_mask` arguments on Keras 3
    - tensor_ops: concatenate tensors on Keras 2 and 3

Run: python -m recipes.masking
"""

import numpy as np
import tensorflow as tf
from tensorflow import keras

KERAS_MAJOR = 3 if hasattr(keras, "version") else 2


def _static_shape(name, value):
    """The shape of an array or tensor as a tuple (None for unknown sizes), checked first."""
    if value is None:
        raise ValueError(f"{name} must be an array or tensor, got None")
    shape = getattr(value, "shape", None)
    if shape is None:
        raise ValueError(f"{name} must be an array or tensor with a shape, got {value!r}")
    try:
        dims = tuple(shape)
    except TypeError:  # A tf.TensorShape of unknown rank cannot be iterated.
        raise ValueError(f"{name} must have a known rank, got shape {shape}") from None
    return tuple(None if dim is None else int(dim) for dim in dims)


def masked_mean(values, mask):
    """Mean of `values` (batch, steps, features) over the steps where `mask` (batch, steps) is
    True; a row without True steps gives 0. Works on NumPy arrays and tensors, in a Lambda or
    a custom layer's `call` on every Keras."""
    values_shape = _static_shape("values", values)
    mask_shape = _static_shape("mask", mask)
    if len(values_shape) != 3:
        raise ValueError(
            f"values must have rank 3 (batch, steps, features), got shape {values_shape}"
        )
    if len(mask_shape) != 2:
        raise ValueError(f"mask must have rank 2 (batch, steps), got shape {mask_shape}")
    for axis, (values_size, mask_size) in enumerate(zip(values_shape[:2], mask_shape, strict=True)):
        if values_size is not None and mask_size is not None and values_size != mask_size:
            raise ValueError(
                f"mask shape {mask_shape} does not match values shape {values_shape} on axis {axis}"
            )
    values = tf.convert_to_tensor(values)
    weights = tf.cast(mask, values.dtype)[:, :, tf.newaxis]
    total = tf.reduce_sum(values * weights, axis=1)
    count = tf.reduce_sum(weights, axis=1)
    return tf.math.divide_no_nan(total, count)


def keras_mask(tensor):
    """The mask Keras attached to `tensor` (a layer's eager output or a symbolic tensor of a
    functional model), or None when no mask reached it."""
    if isinstance(tensor, np.ndarray) or not hasattr(tensor, "dtype"):
        raise ValueError(
            f"tensor must be a tensor returned by a Keras layer (NumPy arrays carry no mask), "
            f"got {type(tensor).__name__}: {tensor!r}"
        )
    # Keras 2 and Keras 3 (TensorFlow backend) both keep it in this attribute.
    return getattr(tensor, "_keras_mask", None)


def portable_pooling_model(vocabulary_size=10, embedding_size=4, extra_features=2):
    """Token ids and extra per-step features -> masked mean, with the mask passed by hand.

    The mask is made from the ids once and given to the LSTM and the pooling explicitly, so
    the `Lambda` between them, which drops any mask Keras attached, cannot lose it.
    Returns a model with two outputs: the features pooled, and the features before pooling.
    """
    for name, value in (
        ("vocabulary_size", vocabulary_size),
        ("embedding_size", embedding_size),
        ("extra_features", extra_features),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    token_ids = keras.Input((None,), dtype="int32")
    extra = keras.Input((None, extra_features))
    mask = keras.layers.Lambda(lambda ids: tf.not_equal(ids, 0))(token_ids)
    x = keras.layers.Embedding(vocabulary_size, embedding_size)(token_ids)
    # Joined before the LSTM: an LSTM given `mask=` attaches it to its output on recent
    # Keras 3, and Keras 3.4 to 3.11 cannot concatenate a masked and an unmasked input.
    x = keras.layers.Concatenate()([x, extra])
    x = keras.layers.LSTM(embedding_size, return_sequences=True)(x, mask=mask)
    x = keras.layers.Lambda(lambda features: features * 2.0)(x)
    pooled = keras.layers.GlobalAveragePooling1D()(x, mask=mask)
    return keras.Model([token_ids, extra], [pooled, x])


def demo():
    token_ids = np.array([[4, 2, 7, 0, 0, 0], [5, 0, 0, 0, 0, 0]], "int32")
    extra = np.ones((2, 6, 2), "float32")
    steps = (token_ids != 0).sum(axis=1)
    embedded = keras.layers.Embedding(10, 4, mask_zero=True)(token_ids)
    print("mask after Embedding(mask_zero=True):", np.asarray(keras_mask(embedded)).tolist())
    print("mask after Flatten:", keras_mask(keras.layers.Flatten()(embedded)))
    model = portable_pooling_model()
    pooled, features = (np.asarray(output) for output in model([token_ids, extra]))
    by_hand = np.stack([features[row, :length].mean(axis=0) for row, length in enumerate(steps)])
    print("pooling with mask= equals the NumPy mean over the real steps:")
    print("  ", bool(np.allclose(pooled, by_hand, atol=1e-6)))


if __name__ == "__main__":
    demo()
