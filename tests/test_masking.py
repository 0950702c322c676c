"""Tests for recipes/masking.py: where a Keras mask goes, where it is lost, and a portable form.

Whether a mask reached a layer is read from the numbers: a `GlobalAveragePooling1D` after the
layer returns either the NumPy mean over the unmasked steps of the layer's output ("masked
mean") or the NumPy mean over all steps ("mean over all steps"). The inputs are chosen so the
two differ. The padded steps of the float inputs are 0, so `Masking()` masks exactly them.
"""

import warnings

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from conftest import outcome_of
from recipes.masking import keras_mask, masked_mean, portable_pooling_model

STEPS = 8  # every batch is padded to this many steps
FEATURES = 3
VOCABULARY = 10
LENGTHS = np.array([3, 5])  # the real steps of the two sequences in the fixed batch
# float32 LSTM/GRU against float64 NumPy over up to 6 steps, and a padded run against an
# unpadded one: rounding only.
RNN_ATOL = 1e-5
POOL_ATOL = 1e-6
DESTROY_WARNING = "will therefore destroy the mask"
# Keras 2: Concatenate(axis=1) of a masked and an unmasked input, when the model is built.
DIMENSION_ERROR = "Dimension 0 in both shapes must be equal"
# Keras 3.4 to 3.11: Concatenate of a masked input, when the model is called
# (keras-team/keras#21581, fixed by keras-team/keras#21611 in 3.12).
BROADCAST_ERROR = "Attempt to convert a value (None)"


def padded_floats():
    features = np.random.default_rng(0).normal(size=(len(LENGTHS), STEPS, FEATURES))
    features = features.astype("float32")
    for row, length in enumerate(LENGTHS):
        features[row, length:] = 0.0
    return features


def padded_ids():
    ids = np.zeros((len(LENGTHS), STEPS), "int32")
    rng = np.random.default_rng(1)
    for row, length in enumerate(LENGTHS):
        ids[row, :length] = rng.integers(1, VOCABULARY, size=length)
    return ids


def mean_by_hand(features, lengths):
    """NumPy: each row's mean over its first `length` steps, and its mean over all steps."""
    features = np.asarray(features)
    masked = np.stack([features[row, :length].mean(axis=0) for row, length in enumerate(lengths)])
    return masked, features.mean(axis=1)


def pooling_outcome(features, pooled, lengths=LENGTHS):
    masked, everything = mean_by_hand(features, lengths)
    assert not np.allclose(masked, everything, atol=1e-3), "the inputs do not tell them apart"
    if np.allclose(pooled, masked, atol=POOL_ATOL, rtol=0):
        return "masked mean"
    if np.allclose(pooled, everything, atol=POOL_ATOL, rtol=0):
        return "mean over all steps"
    return f"neither: {np.asarray(pooled).tolist()}"


# --- The chains: (inputs, output of the layer under test), each a functional graph ---------


def ids_input():
    return keras.Input((STEPS,), dtype="int32")


def floats_input():
    return keras.Input((STEPS, FEATURES))


def embedded(ids):
    return keras.layers.Embedding(VOCABULARY, FEATURES, mask_zero=True)(ids)


class TakesMask(keras.layers.Layer):
    """A custom layer whose `call` takes `mask` but which does not set `supports_masking`."""

    received = []

    def call(self, inputs, mask=None):
        TakesMask.received.append(mask is not None)
        return inputs * 2.0


class PassesMaskOn(keras.layers.Layer):
    """A custom layer that sets `supports_masking = True`: Keras passes the mask on."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        return inputs * 2.0


def masking_lstm():
    x = floats_input()
    return x, keras.layers.LSTM(4, return_sequences=True)(keras.layers.Masking()(x))


def masking_gru():
    x = floats_input()
    return x, keras.layers.GRU(4, return_sequences=True)(keras.layers.Masking()(x))


def embedding_concatenate_unmasked():
    ids, extra = ids_input(), floats_input()
    return [ids, extra], keras.layers.Concatenate()([embedded(ids), extra])


def embedding_concatenate_masked():
    ids = ids_input()
    return ids, keras.layers.Concatenate()([embedded(ids), embedded(ids)])


def embedding_add():
    ids = ids_input()
    embedding = embedded(ids)
    return ids, keras.layers.Add()([embedding, embedding])


def single(layer_factory):
    def chain():
        ids = ids_input()
        return ids, layer_factory()(embedded(ids))

    return chain


def embedding_operator():
    ids = ids_input()
    return ids, embedded(ids) * 2.0


def run_chain(chain):
    """Builds inputs -> chain -> GlobalAveragePooling1D and calls it on the fixed batch.

    Returns (outcome, the messages of the warnings raised while building and calling).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = []

        def build_and_call():
            inputs, features = chain()
            pooled = keras.layers.GlobalAveragePooling1D()(features)
            model = keras.Model(inputs, [features, pooled])
            data = (
                [padded_ids(), padded_floats()]
                if isinstance(inputs, list)
                else padded_ids()
                if "int" in str(inputs.dtype)
                else padded_floats()
            )
            results.append(model(data))

        outcome = outcome_of(build_and_call, [DIMENSION_ERROR, BROADCAST_ERROR])
    if outcome == "works":
        features, pooled = results[0]
        outcome = pooling_outcome(features, pooled)
    return outcome, [str(warning.message) for warning in caught]


def with_warning_flag(outcome, messages):
    warned = any(DESTROY_WARNING in message for message in messages)
    return f"{outcome}; warns '{DESTROY_WARNING}'" if warned else f"{outcome}; no warning"


# --- The core claim: masked steps change nothing ------------------------------------------


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def lstm_by_hand(inputs, kernel, recurrent_kernel, bias):
    """NumPy LSTM (Keras' gate order i, f, c, o) over the steps of one unpadded sequence."""
    units = recurrent_kernel.shape[0]
    hidden, cell = np.zeros(units), np.zeros(units)
    for step in inputs:
        gates = step @ kernel + hidden @ recurrent_kernel + bias
        i, f, c, o = (gates[k * units : (k + 1) * units] for k in range(4))
        cell = sigmoid(f) * cell + sigmoid(i) * np.tanh(c)
        hidden = sigmoid(o) * np.tanh(cell)
    return hidden


def gru_by_hand(inputs, kernel, recurrent_kernel, bias):
    """NumPy GRU with reset_after=True (the default; gate order z, r, h), one sequence."""
    units = recurrent_kernel.shape[0]
    hidden = np.zeros(units)
    for step in inputs:
        from_input = step @ kernel + bias[0]
        from_state = hidden @ recurrent_kernel + bias[1]
        z = sigmoid(from_input[:units] + from_state[:units])
        r = sigmoid(from_input[units : 2 * units] + from_state[units : 2 * units])
        candidate = np.tanh(from_input[2 * units :] + r * from_state[2 * units :])
        hidden = z * hidden + (1.0 - z) * candidate
    return hidden


def test_padding_changes_nothing_for_lstm_gru_and_pooling(observe):
    """Hypothesis over 3 sequences of 1..6 tokens padded to 8: each output equals NumPy's
    computation over the sequence alone, so the padded steps changed nothing."""
    ids = keras.Input((STEPS,), dtype="int32")
    embedding_layer = keras.layers.Embedding(VOCABULARY, FEATURES, mask_zero=True)
    lstm, gru = keras.layers.LSTM(4), keras.layers.GRU(4)
    embedding = embedding_layer(ids)
    pooled = keras.layers.GlobalAveragePooling1D()(embedding)
    model = keras.Model(ids, [lstm(embedding), gru(embedding), pooled])
    # One trace for every example: eager LSTM and GRU calls cost ~0.1 s each on Keras 3.
    run = tf.function(model, input_signature=[tf.TensorSpec((3, STEPS), tf.int32)])
    table = embedding_layer.get_weights()[0].astype("float64")
    lstm_weights = [weight.astype("float64") for weight in lstm.get_weights()]
    gru_weights = [weight.astype("float64") for weight in gru.get_weights()]

    @hypothesis.given(
        st.lists(
            st.lists(st.integers(1, VOCABULARY - 1), min_size=1, max_size=6),
            min_size=3,
            max_size=3,
        )
    )
    def check(sequences):
        padded = np.zeros((3, STEPS), "int32")
        for row, tokens in enumerate(sequences):
            padded[row, : len(tokens)] = tokens
        lstm_out, gru_out, pooled_out = (np.asarray(out) for out in run(tf.constant(padded)))
        for row, tokens in enumerate(sequences):
            alone = table[tokens]
            np.testing.assert_allclose(
                lstm_out[row], lstm_by_hand(alone, *lstm_weights), atol=RNN_ATOL, rtol=0
            )
            np.testing.assert_allclose(
                gru_out[row], gru_by_hand(alone, *gru_weights), atol=RNN_ATOL, rtol=0
            )
            np.testing.assert_allclose(pooled_out[row], alone.mean(axis=0), atol=POOL_ATOL, rtol=0)

    check()
    observe(
        "Embedding(mask_zero=True) -> LSTM/GRU/GlobalAveragePooling1D, padded to 8 steps",
        "same outputs as NumPy over the unpadded sequence (within 1e-5)",
    )


# --- Where the mask goes and where it is lost -----------------------------------------------


@pytest.mark.parametrize(
    ("name", "chain"),
    [
        ("Embedding(mask_zero=True) -> Dense", single(lambda: keras.layers.Dense(2))),
        ("Embedding(mask_zero=True) -> Dropout", single(lambda: keras.layers.Dropout(0.5))),
        ("Embedding(mask_zero=True) -> custom layer with supports_masking", single(PassesMaskOn)),
    ],
)
def test_mask_passes_through_dense_dropout_and_supporting_layer(name, chain, observe):
    outcome, messages = run_chain(chain)
    assert outcome == "masked mean"
    assert not [message for message in messages if DESTROY_WARNING in message]
    observe(f"{name} -> GlobalAveragePooling1D", outcome)


@pytest.mark.parametrize(
    ("name", "chain"),
    [
        ("Masking -> LSTM(return_sequences=True)", masking_lstm),
        ("Masking -> GRU(return_sequences=True)", masking_gru),
    ],
)
def test_rnn_passes_the_mask_on_until_a_release_carries_keras_23235(name, chain, version_split):
    """keras-team/keras#23235 (main after 3.15.1) stops this: a release with it fails here."""
    outcome, _ = run_chain(chain)
    version_split(
        f"{name} -> GlobalAveragePooling1D",
        outcome,
        {"keras<3": "masked mean", "keras>=3": "masked mean"},
    )


@pytest.mark.parametrize(
    ("name", "chain"),
    [
        (
            "Embedding(mask_zero=True) -> Lambda",
            single(lambda: keras.layers.Lambda(lambda t: t * 2.0)),
        ),
        ("Embedding(mask_zero=True) -> Reshape", single(lambda: keras.layers.Reshape((STEPS, 3)))),
        ("Embedding(mask_zero=True) -> custom call(inputs, mask=None)", single(TakesMask)),
    ],
)
def test_lambda_reshape_and_custom_layer_drop_the_mask(name, chain, version_split):
    TakesMask.received.clear()
    outcome, messages = run_chain(chain)
    assert outcome == "mean over all steps"
    if "custom" in name:
        # The layer itself received the mask in `call`; only its output lost it.
        assert TakesMask.received and all(TakesMask.received)
    version_split(
        f"{name} -> GlobalAveragePooling1D",
        with_warning_flag(outcome, messages),
        {
            "keras<3": "mean over all steps; no warning",
            "keras>=3": f"mean over all steps; warns '{DESTROY_WARNING}'",
        },
    )


def test_an_operator_drops_the_mask_silently(observe):
    outcome, messages = run_chain(embedding_operator)
    assert with_warning_flag(outcome, messages) == "mean over all steps; no warning"
    observe("Embedding(mask_zero=True) * 2.0 -> GlobalAveragePooling1D", outcome)


MERGE_SPLITS = {
    "Embedding(mask_zero=True) and an unmasked input -> Concatenate()": (
        embedding_concatenate_unmasked,
        {
            "keras<3": "masked mean",
            "keras>=3,<3.4": "mean over all steps",
            "keras>=3.4,<3.12": f"ValueError: {BROADCAST_ERROR}",
            "keras>=3.12": "mean over all steps",
        },
    ),
    "two Embedding(mask_zero=True) -> Concatenate()": (
        embedding_concatenate_masked,
        {
            "keras<3": "masked mean",
            "keras>=3,<3.4": "mean over all steps",
            "keras>=3.4,<3.12": f"ValueError: {BROADCAST_ERROR}",
            "keras>=3.12": "masked mean",
        },
    ),
    "Embedding(mask_zero=True) -> Add()": (
        embedding_add,
        {
            "keras<3": "masked mean",
            "keras>=3,<3.4": "mean over all steps",
            "keras>=3.4": "masked mean",
        },
    ),
}


@pytest.mark.parametrize("name", list(MERGE_SPLITS))
def test_merge_layers_and_the_mask(name, version_split):
    chain, known = MERGE_SPLITS[name]
    outcome, messages = run_chain(chain)
    if "unmasked" in name and outcome == "mean over all steps":
        # Keras 3 loses the mask here without the warning a Lambda or Reshape draws.
        assert not [message for message in messages if DESTROY_WARNING in message]
    version_split(f"{name} -> GlobalAveragePooling1D", outcome, known)


def test_concatenate_on_the_time_axis_with_an_unmasked_input(version_split):
    """Masking(a) and an unmasked b joined along the steps (keras-team/keras#21611)."""
    first = np.array([[[0, 0], [1, 2], [0, 0], [3, 4]]], "float32")
    second = np.array([[[0, 0], [0, 0], [1, 2], [3, 4]]], "float32")
    results = []

    def build_and_call():
        a, b = keras.Input((4, 2)), keras.Input((4, 2))
        joined = keras.layers.Concatenate(axis=1)([keras.layers.Masking()(a), b])
        pooled = keras.layers.GlobalAveragePooling1D()(joined)
        results.append(keras.Model([a, b], pooled)([first, second]))

    outcome = outcome_of(build_and_call, [DIMENSION_ERROR, BROADCAST_ERROR])
    if outcome == "works":
        steps = np.concatenate([first, second], axis=1)[0]
        unmasked = np.concatenate([np.any(first[0] != 0, axis=-1), np.ones(4, bool)])
        masked_by_hand = steps[unmasked].mean(axis=0)
        pooled = np.asarray(results[0])[0]
        if np.allclose(pooled, masked_by_hand, atol=POOL_ATOL, rtol=0):
            outcome = "masked mean"
        elif np.allclose(pooled, steps.mean(axis=0), atol=POOL_ATOL, rtol=0):
            outcome = "mean over all steps"
        else:
            outcome = f"neither: {pooled.tolist()}"
    version_split(
        "Masking(a) and unmasked b -> Concatenate(axis=1) -> GlobalAveragePooling1D",
        outcome,
        {
            "keras<3": f"ValueError: {DIMENSION_ERROR}",
            "keras>=3,<3.4": "mean over all steps",
            "keras>=3.4,<3.12": f"ValueError: {BROADCAST_ERROR}",
            "keras>=3.12": "masked mean",
        },
    )


class TwoInputs(keras.layers.Layer):
    """A layer called on a list of two masked inputs, `call(self, inputs, mask=None)`."""

    received = []

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        TwoInputs.received.append(mask)
        return inputs[0] + inputs[1]

    def compute_mask(self, inputs, mask=None):
        return None


class TwoInputsWithKwargs(TwoInputs):
    """The same with `**kwargs` in `call`, as in keras-team/keras#19311."""

    def call(self, inputs, mask=None, **kwargs):
        TwoInputs.received.append(mask)
        return inputs[0] + inputs[1]


def describe_mask_argument(mask):
    if mask is None:
        return "None"
    if isinstance(mask, (list, tuple)):
        kinds = ["a mask" if item is not None else "None" for item in mask]
        return f"a list: [{', '.join(kinds)}]"
    return "one mask"


BOTH_MASKS = "a list: [a mask, a mask]"


@pytest.mark.parametrize(
    ("layer_class", "signature", "known"),
    [
        (TwoInputs, "call(inputs, mask=None)", {"keras<3": BOTH_MASKS, "keras>=3": BOTH_MASKS}),
        (
            TwoInputsWithKwargs,
            "call(inputs, mask=None, **kwargs)",
            {"keras<3": BOTH_MASKS, "keras>=3,<3.1": "None", "keras>=3.1": BOTH_MASKS},
        ),
    ],
)
def test_custom_layer_on_a_list_of_masked_inputs(layer_class, signature, known, version_split):
    TwoInputs.received.clear()
    ids = ids_input()
    output = layer_class()([embedded(ids), embedded(ids)])
    keras.Model(ids, output)(padded_ids())
    # The last call is the eager one, on real tensors: check its masks against the ids.
    last = TwoInputs.received[-1]
    observed = describe_mask_argument(last)
    if observed == BOTH_MASKS:
        for mask in last:
            np.testing.assert_array_equal(np.asarray(mask), padded_ids() != 0)
    version_split(f"custom layer {signature} on [masked, masked]: `mask` is", observed, known)


# --- The portable form: the mask passed by hand -------------------------------------------


def test_lstm_given_mask_by_keyword_attaches_it_to_its_output(version_split):
    """Why the portable form joins inputs before the LSTM: an attached mask then reaches a
    Concatenate, which Keras 3.4 to 3.11 cannot call with an unmasked input."""
    ids = ids_input()
    mask = keras.layers.Lambda(lambda token_ids: tf.not_equal(token_ids, 0))(ids)
    features = keras.layers.Embedding(VOCABULARY, FEATURES)(ids)
    assert keras_mask(features) is None
    output = keras.layers.LSTM(4, return_sequences=True)(features, mask=mask)
    version_split(
        "LSTM(return_sequences=True)(x, mask=mask) on an unmasked x: its symbolic output",
        "carries a mask" if keras_mask(output) is not None else "carries no mask",
        {
            "keras<3": "carries a mask",
            "keras>=3,<3.11": "carries no mask",
            "keras>=3.11": "carries a mask",
        },
    )


def test_explicit_mask_survives_concatenate_and_lambda(observe):
    model = portable_pooling_model(vocabulary_size=VOCABULARY, embedding_size=4)
    extra = np.random.default_rng(2).normal(size=(len(LENGTHS), STEPS, 2)).astype("float32")
    pooled, features = model([padded_ids(), extra])
    assert pooling_outcome(features, pooled) == "masked mean"
    # The LSTM inside got the mask too: the real steps do not depend on the padding.
    for row, length in enumerate(LENGTHS):
        _, alone = model([padded_ids()[row : row + 1, :length], extra[row : row + 1, :length]])
        np.testing.assert_allclose(
            np.asarray(features)[row, :length], np.asarray(alone)[0], atol=RNN_ATOL, rtol=0
        )
    observe(
        "Concatenate(unmasked) -> LSTM(mask=mask) -> Lambda -> pooling(mask=mask)",
        "masked mean",
    )


# --- The exported helpers ----------------------------------------------------------------


def test_masked_mean_matches_numpy():
    @hypothesis.given(
        st.integers(1, 3),
        st.integers(1, 6),
        st.data(),
    )
    def check(batch, steps, data):
        values = np.asarray(
            data.draw(
                st.lists(
                    st.floats(-200, 200, allow_nan=False, allow_infinity=False, width=32),
                    min_size=batch * steps * 2,
                    max_size=batch * steps * 2,
                )
            ),
            "float32",
        ).reshape(batch, steps, 2)
        mask = np.asarray(
            data.draw(st.lists(st.booleans(), min_size=batch * steps, max_size=batch * steps))
        ).reshape(batch, steps)
        expected = np.zeros((batch, 2), "float64")
        for row in range(batch):
            if mask[row].any():
                expected[row] = values[row][mask[row]].astype("float64").mean(axis=0)
        # float32 sums of up to 6 values of size <= 200 round by up to about 7e-5.
        np.testing.assert_allclose(
            np.asarray(masked_mean(values, mask)), expected, atol=1e-4, rtol=0
        )

    check()


def test_masked_mean_is_zero_for_a_row_without_unmasked_steps():
    values = np.arange(12, dtype="float32").reshape(2, 3, 2)
    mask = np.array([[False, False, False], [True, False, True]])
    np.testing.assert_array_equal(
        np.asarray(masked_mean(values, mask)), [[0.0, 0.0], [(6 + 10) / 2, (7 + 11) / 2]]
    )


@pytest.mark.parametrize(
    ("values", "mask", "message"),
    [
        (np.zeros((2, 3)), np.ones((2, 3), bool), r"values must have rank 3.*\(2, 3\)"),
        (np.zeros((2, 3, 1)), np.ones((2,), bool), r"mask must have rank 2.*\(2,\)"),
        (np.zeros((2, 3, 1)), None, "mask must be an array or tensor, got None"),
        (np.zeros((2, 3, 1)), np.ones((2, 4), bool), r"does not match values shape.*axis 1"),
        ([1.0, 2.0], np.ones((1, 2), bool), r"values must be an array or tensor.*\[1.0, 2.0\]"),
    ],
)
def test_masked_mean_rejects_bad_input(values, mask, message):
    with pytest.raises(ValueError, match=message):
        masked_mean(values, mask)


def test_keras_mask_reads_the_attached_mask():
    ids = padded_ids()
    embedding = keras.layers.Embedding(VOCABULARY, FEATURES, mask_zero=True)(ids)
    np.testing.assert_array_equal(np.asarray(keras_mask(embedding)), ids != 0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*" + DESTROY_WARNING)
        assert keras_mask(keras.layers.Flatten()(embedding)) is None
    assert keras_mask(tf.constant(ids)) is None


@pytest.mark.parametrize("bad", [np.zeros((2, 3)), [1, 2], None])
def test_keras_mask_rejects_non_tensors(bad):
    with pytest.raises(ValueError, match="tensor must be a tensor returned by a Keras layer"):
        keras_mask(bad)


@pytest.mark.parametrize(
    ("argument", "value"),
    [("vocabulary_size", 0), ("embedding_size", 2.5), ("extra_features", True)],
)
def test_portable_pooling_model_rejects_bad_sizes(argument, value):
    with pytest.raises(ValueError, match=f"{argument} must be a positive int, got {value!r}"):
        portable_pooling_model(**{argument: value})


def test_demo_prints_the_masks_and_the_check(demo_output):
    printed = demo_output("masking")
    assert "mask after Embedding(mask_zero=True): [[True, True, True, False" in printed
    assert "mask after Flatten: None" in printed
    assert printed.rstrip().endswith("True")
