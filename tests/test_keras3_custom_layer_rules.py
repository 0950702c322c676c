"""Tests for recipes/keras3_custom_layer_rules.py: six Keras 2 habits, each on both sides.

Each rule has the notes' Keras 2 form (a small layer defined here), asserted on every stack
with `version_split`, and the portable form in `CappedDense`, asserted with `observe`.
Numbers are checked against `capped_dense_reference` (NumPy), never against Keras.
"""

import re

import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from conftest import outcome_of
from recipes.keras3_custom_layer_rules import CappedDense, capped_dense_reference
from tests.keras_said import outcome_and_said
from tests.layer_contract import check_layer_contract

FEATURES = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
TARGETS = np.random.default_rng(1).normal(size=(6, 1)).astype("float32")
ONES_KERNEL = np.ones((4, 2))
NO_BIAS = np.zeros(2)
UNBUILT = "looks like it has unbuilt state"
DESTROYS_MASK = "will therefore destroy the mask information"
PYTHON_BOOL = "as a Python `bool`"
NO_OUTPUT_SHAPE = [
    "does not have a `compute_output_shape`",
    "should implement `def compute_output_shape",
]


def outcome_and_message(action, fragments):
    """outcome_of's outcome, and the whole message of the error ("" when it worked)."""
    caught = {"message": ""}

    def keep_message():
        try:
            action()
        except Exception as error:
            caught["message"] = str(error)
            raise

    return outcome_of(keep_message, fragments), caught["message"]


# --- Bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"units": 0}, "units=0"),
        ({"units": 2.0}, "units=2.0"),
        ({"units": True}, "units=True"),
        ({"units": "3"}, "units='3'"),
        ({"units": 2, "max_value": 0}, "max_value=0"),
        ({"units": 2, "max_value": -1.5}, "max_value=-1.5"),
        ({"units": 2, "max_value": float("inf")}, "max_value=inf"),
        ({"units": 2, "max_value": "6"}, "max_value='6'"),
        ({"units": 2, "max_value": True}, "max_value=True"),
        ({"units": 2, "kernel_initializer": None}, "kernel_initializer=None"),
        ({"units": 2, "kernel_initializer": "no_such_init"}, "kernel_initializer='no_such_init'"),
    ],
)
def test_capped_dense_rejects_bad_arguments_naming_them(kwargs, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        CappedDense(**kwargs)


def test_a_bad_max_value_in_call_raises_value_error_naming_it():
    with pytest.raises(ValueError, match=re.escape("max_value=-1")):
        CappedDense(2)(FEATURES, max_value=-1)


# --- The portable layer passes Keras' harness and ours ----------------------------------------


def test_capped_dense_passes_the_layer_contract(tmp_path, version_split, observe):
    inputs = np.random.default_rng(2).normal(size=(2, 3, 4)).astype("float32")
    kwargs = {"units": 2, "max_value": 1.5, "kernel_initializer": "ones"}
    expected = capped_dense_reference(inputs, ONES_KERNEL, NO_BIAS, 1.0, 1.5)
    assert np.abs(inputs.sum(axis=-1)).max() > 1.5, "this batch takes the capping branch"
    check_layer_contract(
        CappedDense, kwargs, inputs, expected.astype("float32"), tmp_path, version_split, atol=1e-6
    )
    observe(
        "CappedDense: Keras' layer harness; Functional, Sequential, subclassed; saving", "works"
    )


# --- Rule 1: a tf.Variable attribute is not a weight on Keras 3 ------------------------------


class NotesScale(keras.layers.Layer):
    """The Keras 2 habit: a per-feature factor kept as a bare `tf.Variable`."""

    def build(self, input_shape):
        self.factor = tf.Variable(tf.ones((input_shape[-1],)), name="factor")

    def call(self, inputs):
        return inputs * self.factor


class NotesBlock(keras.layers.Layer):
    """The Keras 2 habit: a sub-layer made in __init__, and no build()."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(2, kernel_initializer="ones")

    def call(self, inputs):
        return self.dense(inputs)


@pytest.fixture(scope="module")
def trained_and_reloaded(tmp_path_factory):
    """Input(4) -> NotesScale -> NotesBlock -> CappedDense(1): one fit step, then a .keras
    round trip (weights set first to values that differ from the initial ones). Built once:
    the rule 1 and rule 4 tests read it and change nothing."""
    inputs = keras.Input((4,))
    notes = NotesScale(name="notes_scale")
    block = NotesBlock(name="block")
    capped = CappedDense(1, max_value=1e6, kernel_initializer="ones", name="capped")
    model = keras.Model(inputs, capped(block(notes(inputs))))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    seen = {
        "listed": any(weight is notes.factor for weight in model.trainable_weights),
        "scale listed": any(weight is capped.scale for weight in model.trainable_weights),
    }
    model.fit(FEATURES, TARGETS, batch_size=len(FEATURES), epochs=1, shuffle=False, verbose=0)
    seen["factor after fit"] = notes.factor.numpy()
    seen["scale after fit"] = float(capped.scale.numpy())
    seen["block kernel"] = block.dense.kernel.numpy()
    notes.factor.assign(np.full(4, 3.0, "float32"))
    path = str(tmp_path_factory.mktemp("round_trip") / "m.keras")
    model.save(path)
    custom_objects = {
        "NotesScale": NotesScale,
        "NotesBlock": NotesBlock,
        "CappedDense": CappedDense,
    }
    loaded = {}

    def load():
        loaded["model"] = keras.models.load_model(path, custom_objects=custom_objects)

    seen["load"], seen["load said"] = outcome_and_said(load, said_fragments=[UNBUILT])
    reloaded = loaded["model"]
    seen["loaded factor"] = reloaded.get_layer("notes_scale").factor.numpy()
    seen["loaded scale"] = float(reloaded.get_layer("capped").scale.numpy())
    seen["loaded block kernel"] = reloaded.get_layer("block").dense.kernel.numpy()
    return seen


def test_fit_and_saving_drop_a_tf_variable_on_keras_3_and_keep_add_weight(
    trained_and_reloaded, version_split, observe
):
    seen = trained_and_reloaded
    # One SGD step by hand: factor, kernels 1, biases 0, scale 1 before it, so the output
    # is scale * 2 * sum(features * factor).
    hidden = 2 * FEATURES.astype(np.float64).sum(axis=1, keepdims=True)
    upstream = 2 * (hidden - TARGETS) / TARGETS.size  # d mse / d output
    scale_after = 1.0 - 0.1 * float((upstream * hidden).sum())
    factor_after = 1.0 - 0.1 * (upstream * 2 * FEATURES).sum(axis=0)
    assert seen["scale listed"]
    np.testing.assert_allclose(seen["scale after fit"], scale_after, atol=1e-6, rtol=0)
    assert seen["loaded scale"] == seen["scale after fit"]
    observe("add_weight `scale`: one fit step, then a .keras round trip", "SGD step; restored")

    factor = seen["factor after fit"]
    if np.allclose(factor, factor_after, atol=1e-6, rtol=0):
        trained = "trained by the SGD step"
    else:
        trained = "unchanged" if np.array_equal(factor, np.ones(4)) else f"changed to {factor}"
    loaded_factor = seen["loaded factor"]
    if np.array_equal(loaded_factor, np.full(4, 3.0)):
        round_trip = "restored"
    else:
        initial = np.array_equal(loaded_factor, np.ones(4))
        round_trip = "initial value" if initial else f"{loaded_factor}"
    version_split(
        "a tf.Variable layer attribute: in model.trainable_weights",
        "listed" if seen["listed"] else "missing",
        {"keras<3": "listed", "keras>=3": "missing"},
    )
    version_split(
        "a tf.Variable layer attribute: one fit step",
        trained,
        {"keras<3": "trained by the SGD step", "keras>=3": "unchanged"},
    )
    version_split(
        "a tf.Variable layer attribute: after a .keras round trip",
        round_trip,
        {"keras<3": "restored", "keras>=3": "initial value"},
    )


# --- Rule 2: no autograph in call() on Keras 3 -----------------------------------------------


class NotesSignFlip(keras.layers.Layer):
    """The Keras 2 habit: a Python `if` on a tensor's value in call()."""

    def call(self, inputs):
        if tf.reduce_sum(inputs) > 0:
            return inputs
        return -inputs


class SignFlipModel(keras.Model):
    """A subclassed model, so `fit` is the first graph that meets the `if`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.flip = NotesSignFlip()
        self.head = keras.layers.Dense(1)

    def call(self, inputs):
        return self.head(self.flip(inputs))


def test_a_python_if_on_a_tensor_fails_in_graphs_on_keras_3(version_split, observe):
    for batch in (FEATURES, -FEATURES):
        expected = batch if batch.sum() > 0 else -batch
        np.testing.assert_array_equal(np.asarray(NotesSignFlip()(batch)), expected)
    observe("a Python `if` on a tensor in call(), called eagerly", "works")

    def functional_build():
        inputs = keras.Input((4,))
        keras.Model(inputs, NotesSignFlip()(inputs))

    built, message = outcome_and_message(
        functional_build, ["Could not automatically infer", PYTHON_BOOL]
    )
    assert built == "works" or PYTHON_BOOL in message, message
    version_split(
        "a Python `if` on a tensor in call(): functional model",
        built,
        {
            "keras<3": "works",
            "keras>=3,<3.4": f"OperatorNotAllowedInGraphError: {PYTHON_BOOL}",
            "keras>=3.4": "OperatorNotAllowedInGraphError: Could not automatically infer",
        },
    )

    model = SignFlipModel()
    model.compile(optimizer="sgd", loss="mse")
    fitted = outcome_of(
        lambda: model.fit(FEATURES, TARGETS, batch_size=len(FEATURES), verbose=0), [PYTHON_BOOL]
    )
    version_split(
        "a Python `if` on a tensor in call(): fit of a subclassed model",
        fitted,
        {"keras<3": "works", "keras>=3": f"OperatorNotAllowedInGraphError: {PYTHON_BOOL}"},
    )


def test_tf_cond_in_call_takes_both_branches_in_a_functional_model(observe):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, CappedDense(2, max_value=2.0, kernel_initializer="ones")(inputs))
    small, large = FEATURES * 0.1, FEATURES * 10
    assert np.abs(small.sum(axis=1)).max() < 2.0 < np.abs(large.sum(axis=1)).max()
    # One predict, two batches: the condition holds for the second only.
    predicted = model.predict(np.concatenate([small, large]), batch_size=len(small), verbose=0)
    for batch, result in zip((small, large), np.split(predicted, 2), strict=True):
        expected = capped_dense_reference(batch, ONES_KERNEL, NO_BIAS, 1.0, 2.0)
        np.testing.assert_allclose(result, expected, atol=1e-6, rtol=0)
    observe("tf.cond in call(), in a functional model", "both branches as NumPy")


class OpsSignFlip(keras.layers.Layer):
    """The Keras 3 form of NotesSignFlip (defined on every stack, used on Keras 3)."""

    def call(self, inputs):
        ops = keras.ops
        return ops.cond(ops.sum(inputs) > 0, lambda: inputs, lambda: ops.negative(inputs))


def test_keras_ops_cond_exists_on_keras_3_only_and_works_in_a_functional_model(version_split):
    present = hasattr(keras, "ops")
    if present:
        inputs = keras.Input((4,))
        model = keras.Model(inputs, OpsSignFlip()(inputs))  # traces call() symbolically
        for batch in (FEATURES, -FEATURES):
            expected = batch if batch.sum() > 0 else -batch
            np.testing.assert_array_equal(np.asarray(model(batch)), expected)
    version_split(
        "keras.ops (for keras.ops.cond) under `from tensorflow import keras`",
        "present" if present else "absent",
        {"keras<3": "absent", "keras>=3": "present"},
    )


# --- Rule 3: non-tensor arguments by keyword --------------------------------------------------


def test_a_non_tensor_call_argument_goes_by_keyword(version_split, observe):
    layer = CappedDense(2, max_value=6.0, kernel_initializer="ones")
    expected = capped_dense_reference(FEATURES, ONES_KERNEL, NO_BIAS, 1.0, 0.5)
    by_keyword = np.asarray(layer(FEATURES, max_value=0.5))
    np.testing.assert_allclose(by_keyword, expected, atol=1e-6, rtol=0)
    observe("a float passed to call() by keyword", "works")

    positional = {}

    def call_positionally():
        positional["output"] = np.asarray(layer(FEATURES, 0.5))

    outcome = outcome_of(
        call_positionally, ["Only input tensors may be passed as positional arguments"]
    )
    if outcome == "works":
        np.testing.assert_allclose(positional["output"], expected, atol=1e-6, rtol=0)
    version_split(
        "a float passed positionally to call()",
        outcome,
        {
            "keras<3": "works",
            "keras>=3": "ValueError: Only input tensors may be passed as positional arguments",
        },
    )


# --- Rule 4: all state in build() -------------------------------------------------------------


class NotesLazyWeight(keras.layers.Layer):
    """The Keras 2 habit: a weight created on the first call()."""

    def call(self, inputs):
        if not hasattr(self, "factor"):
            self.factor = self.add_weight(
                name="factor", shape=(inputs.shape[-1],), initializer="ones"
            )
        return inputs * self.factor


def test_build_of_a_layer_without_build_creates_nothing_and_keras_3_warns(version_split, observe):
    notes = NotesBlock()
    built, said = outcome_and_said(lambda: notes.build((None, 4)), said_fragments=[UNBUILT])
    assert built == "works" and list(notes.weights) == []
    refused = outcome_of(
        lambda: notes.set_weights([np.ones((4, 2)), np.zeros(2)]),
        ["but the layer was expecting 0 weights"],
    )
    assert refused == "ValueError: but the layer was expecting 0 weights", refused
    observe("set_weights after build() of a layer without build()", refused)
    version_split(
        "layer.build(shape) of a layer without build() that holds a Dense",
        said,
        {"keras<3": "nothing", "keras>=3": f"UserWarning: {UNBUILT}"},
    )

    portable = CappedDense(2)
    built, said = outcome_and_said(lambda: portable.build((None, 4)), said_fragments=[UNBUILT])
    assert (built, said) == ("works", "nothing")
    shapes = sorted(tuple(weight.shape) for weight in portable.trainable_weights)
    assert shapes == [(), (2,), (4, 2)], shapes
    new_values = {(): np.float32(2.0), (4, 2): np.full((4, 2), 0.5), (2,): np.arange(2.0)}
    portable.set_weights([new_values[tuple(weight.shape)] for weight in portable.weights])
    expected = capped_dense_reference(FEATURES, np.full((4, 2), 0.5), np.arange(2.0), 2.0, 6.0)
    np.testing.assert_allclose(portable(FEATURES), expected, atol=1e-6, rtol=0)
    observe("CappedDense.build(shape), then set_weights", "three weights, nothing said")


def test_a_sub_layer_takes_the_dtype_policy_only_when_given_it(observe):
    notes = NotesBlock(dtype="mixed_float16")(FEATURES)
    portable = CappedDense(2, dtype="mixed_float16")(FEATURES)
    dtypes = (tf.as_dtype(notes.dtype).name, tf.as_dtype(portable.dtype).name)
    assert dtypes == ("float32", "float16"), dtypes
    observe("mixed_float16 layer whose Dense is made without dtype=: output dtype", "float32")


def test_loading_a_model_that_holds_such_a_layer_warns_on_keras_3(
    trained_and_reloaded, version_split, observe
):
    seen = trained_and_reloaded
    assert seen["load"] == "works"
    # The fit step moved the block's kernel away from its initial ones; the file restores it.
    assert not np.array_equal(seen["block kernel"], np.ones((4, 2)))
    np.testing.assert_array_equal(seen["loaded block kernel"], seen["block kernel"])
    observe("a layer without build() inside a model: .keras round trip", "weights restored")
    version_split(
        "load_model of a .keras model holding a layer without build()",
        seen["load said"],
        {"keras<3": "nothing", "keras>=3": f"UserWarning: {UNBUILT}"},
    )


def test_a_weight_created_in_call_is_refused_on_keras_3(version_split):
    layer = NotesLazyWeight()
    outputs = {}

    def call():
        outputs["value"] = np.asarray(layer(FEATURES))

    outcome = outcome_of(call, ["You cannot add new elements of state"])
    if outcome == "works":
        np.testing.assert_array_equal(outputs["value"], FEATURES)
    version_split(
        "a weight created in call(), first eager call",
        outcome,
        {"keras<3": "works", "keras>=3": "ValueError: You cannot add new elements of state"},
    )


# --- Rule 5: compute_output_shape for TimeDistributed ----------------------------------------


class NotesShapeless(keras.layers.Layer):
    """A custom layer without compute_output_shape: the first two features, doubled."""

    def call(self, inputs):
        return inputs[..., :2] * 2.0


def test_time_distributed_over_a_layer_without_compute_output_shape(version_split):
    sequence = keras.Input((3, 4))
    outcome = outcome_of(
        lambda: keras.layers.TimeDistributed(NotesShapeless())(sequence), NO_OUTPUT_SHAPE
    )
    version_split(
        "TimeDistributed over a custom layer without compute_output_shape (functional)",
        outcome,
        {
            "keras<3": "works",
            "keras>=3,<3.5": "NotImplementedError: should implement `def compute_output_shape",
            "keras>=3.5": "NotImplementedError: does not have a `compute_output_shape`",
        },
    )


def test_time_distributed_over_a_nested_model_needs_keras_3_4(version_split):
    step_inputs = keras.Input((4,))
    nested = {
        "Sequential": keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]),
        "functional": keras.Model(step_inputs, keras.layers.Dense(2)(step_inputs)),
    }
    for kind, inner in nested.items():
        sequence = keras.Input((3, 4))
        shapes = {}

        def wrap(inner=inner, sequence=sequence, shapes=shapes):
            shapes["output"] = tuple(keras.layers.TimeDistributed(inner)(sequence).shape)

        outcome = outcome_of(wrap, NO_OUTPUT_SHAPE)
        if outcome == "works":
            assert shapes["output"] == (None, 3, 2)
        version_split(
            f"TimeDistributed over a nested {kind} model (functional)",
            outcome,
            {
                "keras<3": "works",
                "keras>=3,<3.4": "NotImplementedError: should implement `def compute_output_shape",
                "keras>=3.4": "works",
            },
        )


def test_time_distributed_over_capped_dense_predicts_each_timestep(observe):
    sequence = keras.Input((3, 4))
    layer = CappedDense(2, max_value=100.0, kernel_initializer="ones")
    model = keras.Model(sequence, keras.layers.TimeDistributed(layer)(sequence))
    batch = np.random.default_rng(3).normal(size=(2, 3, 4)).astype("float32") * 0.5
    expected = capped_dense_reference(batch, ONES_KERNEL, NO_BIAS, 1.0, 100.0)
    assert np.abs(expected).max() < 100.0, "no timestep is capped"
    np.testing.assert_allclose(model(batch), expected, atol=1e-6, rtol=0)
    observe("TimeDistributed(CappedDense) in a functional model", "per-timestep result")


# --- Rule 6: masks and arguments named *_mask ------------------------------------------------


class MaskRecorder(keras.layers.Layer):
    """Takes `mask` and records whether Keras passed one; does not set supports_masking."""

    def call(self, inputs, mask=None):
        self.received_mask = mask is not None
        return inputs


class QueryValueRecorder(keras.layers.Layer):
    """Two tensor arguments and two `<name>_mask` arguments."""

    def call(self, query, value, query_mask=None, value_mask=None):
        self.received = (query_mask is not None, value_mask is not None)
        return query + value


IDS = np.array([[1, 2, 0], [3, 0, 0]])


def test_the_mask_reaches_call_and_capped_dense_zeroes_masked_steps(version_split, observe):
    ids = keras.Input((3,), dtype="int32")
    embedding = keras.layers.Embedding(4, 4, mask_zero=True)
    capped = CappedDense(2, max_value=100.0, kernel_initializer="ones")
    embedded = embedding(ids)
    capped_said = outcome_and_said(lambda: capped(embedded), said_fragments=[DESTROYS_MASK])
    assert capped_said == ("works", "nothing"), capped_said
    outputs = capped(embedded)
    recorder = MaskRecorder()
    outcome, said = outcome_and_said(lambda: recorder(outputs), said_fragments=[DESTROYS_MASK])
    assert outcome == "works" and recorder.received_mask, "CappedDense passes the mask on"

    predicted = np.asarray(keras.Model(ids, outputs)(IDS))
    table = embedding.get_weights()[0]
    expected = capped_dense_reference(table[IDS], ONES_KERNEL, NO_BIAS, 1.0, 100.0, IDS != 0)
    np.testing.assert_allclose(predicted, expected, atol=1e-6, rtol=0)
    assert (predicted[IDS == 0] == 0).all() and (predicted[IDS != 0] != 0).all()
    observe("Embedding(mask_zero=True) -> call(inputs, mask=None)", "mask passed")
    version_split(
        "a layer whose call() takes `mask` without supports_masking = True",
        said,
        {"keras<3": "nothing", "keras>=3": f"UserWarning: {DESTROYS_MASK}"},
    )


def test_name_mask_arguments_are_filled_from_keras_masks_on_keras_3_only(version_split):
    embedded = keras.layers.Embedding(4, 4, mask_zero=True)(keras.Input((3,), dtype="int32"))
    recorder = QueryValueRecorder()
    recorder(embedded, embedded)
    received = {
        (True, True): "query_mask and value_mask filled",
        (False, False): "both None",
    }.get(recorder.received, f"{recorder.received}")
    version_split(
        "call(query, value, query_mask=None, value_mask=None) after a masking Embedding",
        received,
        {"keras<3": "both None", "keras>=3": "query_mask and value_mask filled"},
    )


class TwoShapeBuild(keras.layers.Layer):
    """build() asks for the shape of an `attention_mask` tensor argument."""

    def build(self, inputs_shape, attention_mask_shape=None):
        self.attention_mask_shape = attention_mask_shape
        super().build(inputs_shape)

    def call(self, inputs, attention_mask=None):
        return inputs * tf.cast(attention_mask, inputs.dtype)


class TwoShapeOutput(keras.layers.Layer):
    """compute_output_shape() asks for the shape of an `attention_mask` tensor argument."""

    def call(self, inputs, attention_mask=None):
        return inputs * tf.cast(attention_mask, inputs.dtype)

    def compute_output_shape(self, inputs_shape, attention_mask_shape):
        return inputs_shape


class OneShape(keras.layers.Layer):
    """The portable form: build() and compute_output_shape() take one shape."""

    def build(self, input_shape):
        self.built_with = tuple(input_shape)
        super().build(input_shape)

    def call(self, inputs, attention_mask=None):
        return inputs * tf.cast(attention_mask, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


def test_an_attention_mask_argument_reaches_two_argument_build_from_keras_3_14(
    version_split, observe
):
    values, attention = keras.Input((3,)), keras.Input((3,))
    two_shape_build = TwoShapeBuild()
    two_shape_build(values, attention_mask=attention)
    shape = two_shape_build.attention_mask_shape
    version_split(
        "build(self, inputs_shape, attention_mask_shape=None): attention_mask_shape",
        "None" if shape is None else str(tuple(shape)),
        {"keras<3.14": "None", "keras>=3.14": "(None, 3)"},
    )
    outcome = outcome_of(
        lambda: TwoShapeOutput()(values, attention_mask=attention),
        ["missing 1 required positional argument: 'attention_mask_shape'"],
    )
    version_split(
        "compute_output_shape(self, inputs_shape, attention_mask_shape) in a functional model",
        outcome,
        {
            "keras<3": "works",
            "keras>=3,<3.14": "TypeError: missing 1 required positional argument: "
            "'attention_mask_shape'",
            "keras>=3.14": "works",
        },
    )

    one_shape = OneShape()
    model = keras.Model([values, attention], one_shape(values, attention_mask=attention))
    assert one_shape.built_with == (None, 3)
    mask = np.array([[1, 1, 0], [1, 0, 0]], "float32")
    np.testing.assert_array_equal(model([FEATURES[:2, :3], mask]), FEATURES[:2, :3] * mask)
    observe("single-argument build/compute_output_shape with attention_mask=", "works")


def test_demo_prints_each_rule(demo_output):
    printed = demo_output("keras3_custom_layer_rules")
    assert "weights after build(): [(), (3, 2), (2,)]" in printed
    assert "TimeDistributed output shape: (None, 5, 4)" in printed
    assert "masked step (id 0) is zero: True" in printed
