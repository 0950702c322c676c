"""Tests for recipes/sample_and_class_weights.py: every reported loss against numpy by hand.

The models have fixed, known weights and train with SGD at learning rate 0, so `fit` leaves
them unchanged and every loss it reports is a number numpy computes from the inputs alone:
a Dense(1) with kernel 0.5 and bias 0.25 for regression, a Dense(3) softmax with KERNEL and
BIAS for classification (applied to each timestep of a sequence too).

Models whose tests read only values compile with `run_eagerly=True`: the same loss and metric
code as the compiled step, without the time its tracing takes. Models whose tests also record
errors compile as users do, so the recorded messages are the ones users see.
"""

import json

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from conftest import outcome_of
from recipes.sample_and_class_weights import sample_weights_from_class_weight

RTOL = 1e-6  # float32 losses against float64 numpy

# --- Regression: the first sample is off by exactly 1 --------------------------------------

REGRESSION_INPUTS = np.array([[1.5], [1.0], [3.0], [-1.0]], "float32")
REGRESSION_TARGETS = np.array([[2.0], [0.0], [0.5], [1.0]], "float32")
REGRESSION_ERRORS = (0.5 * REGRESSION_INPUTS[:, 0] + 0.25 - REGRESSION_TARGETS[:, 0]).astype(
    "float64"
)
SQUARED_ERRORS = REGRESSION_ERRORS**2


def regression_model(loss="mse"):
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.set_weights([np.array([[0.5]], "float32"), np.array([0.25], "float32")])
    model.compile(loss=loss, metrics=["mae"], weighted_metrics=["mse"], run_eagerly=True)
    return model


@pytest.fixture(scope="module")
def regressor():
    """Only evaluated, never trained: the tests share it."""
    return regression_model()


def evaluate(model, weights, batch_size):
    return model.evaluate(
        REGRESSION_INPUTS,
        REGRESSION_TARGETS,
        sample_weight=np.asarray(weights, "float32"),
        batch_size=batch_size,
        verbose=0,
        return_dict=True,
    )


def test_loss_divides_by_the_sample_count_and_the_weighted_metric_by_the_weight_sum(
    regressor, observe, version_split
):
    """One batch: the same on every release. Batches of 3 and 1: Keras 3.0 and 3.1 differ."""
    weights = np.array([1.0, 0.0, 0.0, 0.0])
    assert abs(REGRESSION_ERRORS[0]) == 1.0 and (REGRESSION_ERRORS[1:] != 0).all()
    logs = evaluate(regressor, weights, batch_size=4)
    by_count = (weights * SQUARED_ERRORS).sum() / len(weights)
    by_weight_sum = (weights * SQUARED_ERRORS).sum() / weights.sum()
    assert (by_count, by_weight_sum) == (0.25, 1.0)
    np.testing.assert_allclose(logs["loss"], by_count, rtol=RTOL)
    np.testing.assert_allclose(logs["mse"], by_weight_sum, rtol=RTOL)
    # A metric in `metrics` ignores the weights: the plain mean of all four errors.
    np.testing.assert_allclose(logs["mae"], np.abs(REGRESSION_ERRORS).mean(), rtol=RTOL)
    assert np.abs(REGRESSION_ERRORS).mean() != (weights * np.abs(REGRESSION_ERRORS)).sum()
    observe(
        "one batch, sample_weight 1, 0, 0, 0: loss / weighted mse / mae",
        "sum(w*loss)/N = 0.25 / sum(w*loss)/sum(w) = 1.0 / unweighted mean",
    )

    weights = np.array([2.0, 0.0, 1.0, 0.5])
    weighted = weights * SQUARED_ERRORS
    logs = evaluate(regressor, weights, batch_size=3)  # batches of 3 and 1 samples
    over_all_samples = weighted.sum() / 4
    mean_of_batches = (weighted[:3].sum() / 3 + weighted[3:].sum() / 1) / 2
    assert abs(over_all_samples - mean_of_batches) > 0.05
    # The weighted metric accumulates over batches everywhere.
    np.testing.assert_allclose(logs["mse"], weighted.sum() / weights.sum(), rtol=RTOL)
    if np.isclose(logs["loss"], over_all_samples, rtol=RTOL, atol=0):
        observed = "sum(w*loss)/N over all samples"
    elif np.isclose(logs["loss"], mean_of_batches, rtol=RTOL, atol=0):
        observed = "plain mean of the batch losses"
    else:
        observed = f"loss {logs['loss']!r}"
    version_split(
        "evaluate over batches of 3 and 1 samples with sample_weight: the loss",
        observed,
        {
            "keras<3": "sum(w*loss)/N over all samples",
            "keras>=3,<3.2": "plain mean of the batch losses",
            "keras>=3.2": "sum(w*loss)/N over all samples",
        },
    )


def test_mean_with_sample_weight_reduction_reports_the_weighted_mean_from_keras_3_7(
    version_split,
):
    outcome = outcome_of(
        lambda: keras.losses.MeanSquaredError(reduction="mean_with_sample_weight"),
        ("Invalid value for argument `reduction`", "Invalid Reduction Key"),
    )
    observed = outcome
    if outcome == "works":
        weights = np.array([2.0, 0.0, 1.0, 0.5])
        model = regression_model(keras.losses.MeanSquaredError(reduction="mean_with_sample_weight"))
        logs = evaluate(model, weights, batch_size=4)
        weighted_mean = (weights * SQUARED_ERRORS).sum() / weights.sum()
        np.testing.assert_allclose(logs["mse"], weighted_mean, rtol=RTOL)
        if np.isclose(logs["loss"], weighted_mean, rtol=RTOL, atol=0):
            observed = "works: loss = weighted metric = sum(w*loss)/sum(w)"
        else:
            observed = f"works: loss {logs['loss']!r}"
    version_split(
        'reduction="mean_with_sample_weight"',
        observed,
        {
            "keras<3": "ValueError: Invalid Reduction Key",
            "keras>=3,<3.7": "ValueError: Invalid value for argument `reduction`",
            "keras>=3.7": "works: loss = weighted metric = sum(w*loss)/sum(w)",
        },
    )


# --- Classification -------------------------------------------------------------------------

CLASS_INPUTS = np.array([[0.0], [1.0], [2.0], [-1.0], [0.5], [3.0]], "float32")
LABELS = np.array([0, 1, 2, 2, 1, 0], "int32")
KERNEL = np.array([[0.3, -0.2, 0.1]], "float32")
BIAS = np.array([0.1, 0.0, -0.1], "float32")
CLASS_WEIGHT = {0: 1.0, 1: 3.0, 2: 0.5}


def crossentropy(inputs, labels):
    """-log softmax(inputs @ KERNEL + BIAS)[label], in float64, of any leading shape."""
    logits = inputs.astype("float64") @ KERNEL.astype("float64") + BIAS.astype("float64")
    log_probabilities = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    return -np.take_along_axis(log_probabilities, labels[..., None], axis=-1)[..., 0]


CROSSENTROPY = crossentropy(CLASS_INPUTS, LABELS)


def weights_by_hand(class_weight, labels, default=None):
    return np.array([class_weight.get(int(label), default) for label in labels.ravel()]).reshape(
        labels.shape
    )


def classifier(
    input_shape=(1,), loss="sparse_categorical_crossentropy", outputs=1, run_eagerly=False
):
    inputs = keras.Input(input_shape)
    dense = keras.layers.Dense(3, activation="softmax")
    probabilities = dense(inputs)
    model = keras.Model(inputs, [probabilities] * outputs if outputs > 1 else probabilities)
    dense.set_weights([KERNEL, BIAS])
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.0),
        loss=[loss] * outputs if outputs > 1 else loss,
        weighted_metrics=[loss] if outputs == 1 else None,
        run_eagerly=run_eagerly,
    )
    return model


@pytest.fixture(scope="module")
def sparse_classifier():
    """The In-short compile; SGD at rate 0, so the tests' one-epoch fits leave it as it was."""
    return classifier()


def fit_logs(model, *arguments, **keywords):
    keywords.setdefault("batch_size", len(CLASS_INPUTS))
    history = model.fit(*arguments, epochs=1, shuffle=False, verbose=0, **keywords)
    return {key: values[0] for key, values in history.history.items()}


def dataset(*arrays):
    return tf.data.Dataset.from_tensor_slices(arrays).batch(len(arrays[0]))


def loss_meaning(loss, meanings):
    """The name of the hand-computed value `loss` equals (relative RTOL), else its value."""
    for meaning, value in meanings.items():
        if np.isclose(loss, value, rtol=RTOL, atol=0):
            return meaning
    return f"loss {loss!r}"


def test_class_weight_reports_exactly_the_loss_of_the_helpers_sample_weights(
    sparse_classifier, observe
):
    weights = sample_weights_from_class_weight(LABELS, CLASS_WEIGHT, num_classes=3)
    np.testing.assert_array_equal(weights, weights_by_hand(CLASS_WEIGHT, LABELS))
    by_class_weight = fit_logs(sparse_classifier, CLASS_INPUTS, LABELS, class_weight=CLASS_WEIGHT)
    by_helper = fit_logs(sparse_classifier, CLASS_INPUTS, LABELS, sample_weight=weights)
    by_count = (weights * CROSSENTROPY).sum() / len(LABELS)
    by_weight_sum = (weights * CROSSENTROPY).sum() / weights.sum()
    assert by_class_weight["loss"] == by_helper["loss"]
    for logs in (by_class_weight, by_helper):
        np.testing.assert_allclose(logs["loss"], by_count, rtol=RTOL)
        # The In-short weighted metric: the weighted mean, not the loss.
        np.testing.assert_allclose(
            logs["sparse_categorical_crossentropy"], by_weight_sum, rtol=RTOL
        )
    assert abs(by_count - by_weight_sum) > 0.1
    observe(
        "fit: class_weight against sample_weight=sample_weights_from_class_weight(...)",
        "the same loss, sum(w*loss)/N",
    )


def test_class_weight_with_sample_weight_multiplies_on_keras_2_and_raises_on_keras_3(
    sparse_classifier, version_split
):
    sample_weight = np.array([2.0, 1.0, 0.5, 1.0, 0.0, 4.0], "float32")
    logs = {}
    outcome = outcome_of(
        lambda: logs.update(
            fit_logs(
                sparse_classifier,
                CLASS_INPUTS,
                LABELS,
                class_weight=CLASS_WEIGHT,
                sample_weight=sample_weight,
            )
        ),
        ("You cannot `class_weight` and `sample_weight` at the same time",),
    )
    if outcome == "works":
        product = weights_by_hand(CLASS_WEIGHT, LABELS) * sample_weight
        outcome = "works: " + loss_meaning(
            logs["loss"],
            {
                "the weights multiply": (product * CROSSENTROPY).sum() / len(LABELS),
                "sample_weight alone": (sample_weight * CROSSENTROPY).sum() / len(LABELS),
            },
        )
    version_split(
        "fit with class_weight and sample_weight together",
        outcome,
        {
            "keras<3": "works: the weights multiply",
            "keras>=3": "ValueError: You cannot `class_weight` and `sample_weight` at the "
            "same time",
        },
    )


def test_class_weight_with_json_string_keys_raises_on_keras_2_and_is_ignored_on_keras_3(
    sparse_classifier, version_split
):
    """Keys read back from JSON are strings (keras-team/keras#23220)."""
    from_json = json.loads(json.dumps(CLASS_WEIGHT))
    assert from_json == {"0": 1.0, "1": 3.0, "2": 0.5}
    with pytest.raises(ValueError, match=r"got key '0' \(str\)"):
        sample_weights_from_class_weight(LABELS, from_json)
    logs = {}
    arrays = outcome_of(
        lambda: logs.update(
            fit_logs(sparse_classifier, CLASS_INPUTS, LABELS, class_weight=from_json)
        ),
        ("Expected `class_weight` to be a dict with keys from 0 to one less",),
    )
    if arrays == "works":
        arrays = "works: " + loss_meaning(
            logs["loss"],
            {
                "the keys are ignored, unweighted loss": CROSSENTROPY.mean(),
                "the keys are used": (weights_by_hand(CLASS_WEIGHT, LABELS) * CROSSENTROPY).sum()
                / len(LABELS),
            },
        )
    tf_data = outcome_of(
        lambda: fit_logs(
            sparse_classifier,
            dataset(CLASS_INPUTS, LABELS),
            batch_size=None,
            class_weight=from_json,
        ),
        (
            "Expected `class_weight` to be a dict with keys from 0 to one less",
            'can only concatenate str (not "int") to str',
        ),
    )
    version_split(
        'fit with class_weight={"0": ..., "1": ..., "2": ...} (keys from JSON)',
        f"arrays: {arrays}; tf.data: {tf_data}",
        {
            "keras<3": "arrays: ValueError: Expected `class_weight` to be a dict with keys from 0 "
            "to one less; tf.data: ValueError: Expected `class_weight` to be a dict with keys "
            "from 0 to one less",
            "keras>=3": "arrays: works: the keys are ignored, unweighted loss; tf.data: "
            'TypeError: can only concatenate str (not "int") to str',
        },
    )


def test_a_class_without_a_key_weighs_1_on_keras_3_arrays_and_stops_tf_data_everywhere(
    sparse_classifier, version_split, observe
):
    """keras-team/keras#23071. Last of the tests on `sparse_classifier`: two fits fail here."""
    without_class_2 = {0: 2.0, 1: 3.0}
    with pytest.raises(ValueError, match=r"class 2 appears in the labels but class_weight has"):
        sample_weights_from_class_weight(LABELS, without_class_2)
    logs = {}
    fragment = "is not in [0, 2)"
    arrays = outcome_of(
        lambda: logs.update(
            fit_logs(sparse_classifier, CLASS_INPUTS, LABELS, class_weight=without_class_2)
        ),
        (fragment,),
    )
    if arrays == "works":
        arrays = "works: " + loss_meaning(
            logs["loss"],
            {
                "the class weighs 1.0": (
                    weights_by_hand(without_class_2, LABELS, default=1.0) * CROSSENTROPY
                ).sum()
                / len(LABELS)
            },
        )
    version_split(
        "fit on arrays, class_weight without a key for a class in the labels",
        arrays,
        {"keras<3": f"InvalidArgumentError: {fragment}", "keras>=3": "works: the class weighs 1.0"},
    )
    tf_data = outcome_of(
        lambda: fit_logs(
            sparse_classifier,
            dataset(CLASS_INPUTS, LABELS),
            batch_size=None,
            class_weight=without_class_2,
        ),
        (fragment,),
    )
    assert tf_data == f"InvalidArgumentError: {fragment}"
    observe("fit on tf.data, class_weight without a key for a label above its largest", tf_data)


def test_class_weight_refuses_several_outputs_and_one_sample_weight_per_output_works(observe):
    model = classifier(outputs=2, run_eagerly=True)
    outcome = outcome_of(
        lambda: fit_logs(model, CLASS_INPUTS, [LABELS, LABELS], class_weight=CLASS_WEIGHT),
        ("`class_weight` is only supported for Models with a single output.",),
    )
    assert outcome == (
        "ValueError: `class_weight` is only supported for Models with a single output."
    )
    weights = sample_weights_from_class_weight(LABELS, CLASS_WEIGHT)
    logs = fit_logs(model, CLASS_INPUTS, [LABELS, LABELS], sample_weight=[weights, np.ones(6)])
    np.testing.assert_allclose(
        logs["loss"],
        (weights * CROSSENTROPY).sum() / len(LABELS) + CROSSENTROPY.mean(),
        rtol=RTOL,
    )
    observe("fit with class_weight on a model with two outputs", outcome)
    observe("fit with sample_weight=[w_a, w_b] on two outputs", "sum of sum(w*loss)/N per output")


# --- Sequences: (N, T) labels and (N, T, C) one-hot targets ---------------------------------

SEQUENCE_INPUTS = np.array([[[0.0], [1.0]], [[2.0], [-1.0]], [[0.5], [3.0]]], "float32")
# The largest label of each sample sits at timestep 1, 0, 0: Keras 2 reads those as classes.
SEQUENCE_LABELS = np.array([[0, 2], [1, 0], [2, 1]], "int32")
SEQUENCE_CROSSENTROPY = crossentropy(SEQUENCE_INPUTS, SEQUENCE_LABELS)
PER_TIMESTEP_LOSS = (
    weights_by_hand(CLASS_WEIGHT, SEQUENCE_LABELS) * SEQUENCE_CROSSENTROPY
).sum() / SEQUENCE_LABELS.size


def test_one_hot_sequence_targets_with_class_weight_and_with_the_helpers_weights(
    version_split, observe
):
    one_hot = np.eye(3, dtype="float32")[SEQUENCE_LABELS]
    weights = sample_weights_from_class_weight(one_hot, CLASS_WEIGHT, one_hot=True)
    np.testing.assert_array_equal(weights, weights_by_hand(CLASS_WEIGHT, SEQUENCE_LABELS))
    model = classifier((2, 1), "categorical_crossentropy", run_eagerly=True)
    # The portable route: (N, T) weights in a tf.data dataset.
    logs = fit_logs(model, dataset(SEQUENCE_INPUTS, one_hot, weights), batch_size=None)
    np.testing.assert_allclose(logs["loss"], PER_TIMESTEP_LOSS, rtol=RTOL)
    observe("fit on tf.data (x, one-hot (N, T, C), the helper's (N, T) weights)", "per-timestep")

    fragments = (
        "`class_weight` not supported for 3+ dimensional targets.",
        "arrays can be converted to Python scalars",
    )
    outcomes = []
    for data in (
        {"x": SEQUENCE_INPUTS, "y": one_hot, "batch_size": 3},
        {"x": dataset(SEQUENCE_INPUTS, one_hot), "batch_size": None},
    ):
        outcome = outcome_of(
            lambda data=data: logs.update(fit_logs(model, class_weight=CLASS_WEIGHT, **data)),
            fragments,
        )
        if outcome == "works":
            outcome = "works: " + loss_meaning(
                logs["loss"], {"per-timestep weights": PER_TIMESTEP_LOSS}
            )
        outcomes.append(outcome)
    version_split(
        "fit with class_weight on one-hot (N, T, C) targets",
        f"arrays: {outcomes[0]}; tf.data: {outcomes[1]}",
        {
            "keras<2.13": "arrays: ValueError: `class_weight` not supported for 3+ dimensional "
            "targets.; tf.data: ValueError: `class_weight` not supported for 3+ dimensional "
            "targets.",
            "keras>=2.13,<3": "arrays: works: per-timestep weights; tf.data: works: "
            "per-timestep weights",
            "keras>=3": "arrays: TypeError: arrays can be converted to Python scalars; tf.data: "
            "works: per-timestep weights",
        },
    )


def test_integer_sequence_labels_get_wrong_weights_on_keras_2_and_fail_on_keras_3(
    version_split, observe
):
    weights = sample_weights_from_class_weight(SEQUENCE_LABELS, CLASS_WEIGHT)
    assert weights.shape == (3, 2)
    logs = fit_logs(
        classifier((2, 1), run_eagerly=True),
        SEQUENCE_INPUTS,
        SEQUENCE_LABELS,
        sample_weight=weights,
        batch_size=3,
    )
    np.testing.assert_allclose(logs["loss"], PER_TIMESTEP_LOSS, rtol=RTOL)
    observe("fit with the helper's (N, T) weights on (N, T) labels", "per-timestep loss")

    # Keras 2 takes (N, T) labels for one-hot rows: each sample gets the weight of the class
    # numbered by the timestep of its largest label.
    timestep_as_class = np.argmax(SEQUENCE_LABELS, axis=1)
    assert timestep_as_class.tolist() == [1, 0, 0]
    misread = (
        weights_by_hand(CLASS_WEIGHT, timestep_as_class)[:, None] * SEQUENCE_CROSSENTROPY
    ).sum() / SEQUENCE_LABELS.size
    assert abs(misread - PER_TIMESTEP_LOSS) > 0.1
    outcome = outcome_of(
        lambda: logs.update(
            fit_logs(
                classifier((2, 1)),
                SEQUENCE_INPUTS,
                SEQUENCE_LABELS,
                class_weight=CLASS_WEIGHT,
                batch_size=3,
            )
        ),
        ("Dimensions must be equal",),
    )
    if outcome == "works":
        outcome = "works: " + loss_meaning(
            logs["loss"],
            {
                "each sample weighted by the class numbered by its argmax timestep": misread,
                "per-timestep weights": PER_TIMESTEP_LOSS,
            },
        )
    version_split(
        "fit with class_weight on integer (N, T) labels",
        outcome,
        {
            "keras<3": "works: each sample weighted by the class numbered by its argmax timestep",
            "keras>=3": "ValueError: Dimensions must be equal",
        },
    )


# --- The helper alone -----------------------------------------------------------------------


@pytest.mark.stack_independent
@hypothesis.given(
    labels=hnp.arrays(
        np.int32,
        hnp.array_shapes(min_dims=1, max_dims=3, max_side=5),
        elements=st.integers(0, 4),
    ),
    weights=st.lists(st.floats(0.0, 100.0), min_size=5, max_size=5),
)
def test_helper_gives_each_label_its_class_weight_in_the_labels_shape(labels, weights):
    class_weight = dict(enumerate(weights))
    result = sample_weights_from_class_weight(labels, class_weight, num_classes=5)
    expected = np.float32(weights_by_hand(class_weight, labels))
    if labels.ndim >= 2 and labels.shape[-1] == 1:
        expected = expected[..., 0]
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, expected)
    one_hot = np.eye(5, dtype="float32")[labels]
    np.testing.assert_array_equal(
        sample_weights_from_class_weight(one_hot, class_weight, one_hot=True),
        np.float32(weights_by_hand(class_weight, labels)),
    )


@pytest.mark.stack_independent
def test_helper_accepts_numpy_keys_float_labels_and_classes_absent_from_the_labels():
    weights = sample_weights_from_class_weight(
        np.array([[1.0], [0.0]]), {np.int64(0): np.float32(0.5), 1: 2, 2: 7.0}, num_classes=3
    )
    np.testing.assert_array_equal(weights, np.array([2.0, 0.5], "float32"))
    assert sample_weights_from_class_weight([[0, 1], [1, 1]], {0: 1.0, 1: 0.0}).shape == (2, 2)


@pytest.mark.stack_independent
@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: sample_weights_from_class_weight([0, 1], [1.0, 2.0]), r"class_weight=\[1.0"),
        (lambda: sample_weights_from_class_weight([0, 1], {0: 1.0}), r"class 1 appears"),
        (lambda: sample_weights_from_class_weight([0], {"0": 1.0}), r"key '0' \(str\)"),
        (lambda: sample_weights_from_class_weight([0], {0.0: 1.0}), r"key 0.0 \(float\)"),
        (lambda: sample_weights_from_class_weight([0], {True: 1.0}), r"key True \(bool\)"),
        (lambda: sample_weights_from_class_weight([0], {-1: 1.0, 0: 1.0}), r"key -1 \(int\)"),
        (lambda: sample_weights_from_class_weight([0], {0: -1.0}), r"got -1.0 for key 0"),
        (lambda: sample_weights_from_class_weight([0], {0: float("nan")}), r"got nan for key 0"),
        (lambda: sample_weights_from_class_weight([0], {0: "1"}), r"got '1' for key 0"),
        (lambda: sample_weights_from_class_weight([0], {0: 1.0, 3: 1.0}, 3), r"key 3 is not"),
        (lambda: sample_weights_from_class_weight([3], {0: 1.0}, num_classes=3), r"class 3, not"),
        (lambda: sample_weights_from_class_weight([0], {0: 1.0}, num_classes=0), r"classes=0"),
        (lambda: sample_weights_from_class_weight([0], {0: 1.0}, num_classes=2.0), r"es=2.0"),
        (lambda: sample_weights_from_class_weight([0.5], {0: 1.0}), r"labels=\[0.5\]"),
        (lambda: sample_weights_from_class_weight([-1], {0: 1.0}), r"labels=\[-1\]"),
        (lambda: sample_weights_from_class_weight([np.nan], {0: 1.0}), r"labels=\[nan\]"),
        (lambda: sample_weights_from_class_weight(3, {0: 1.0}), r"labels=3"),
        (lambda: sample_weights_from_class_weight(["a"], {0: 1.0}), r"labels=\['a'\]"),
        (lambda: sample_weights_from_class_weight([True], {0: 1.0}), r"labels=\[True\]"),
        (lambda: sample_weights_from_class_weight([0, 1], {0: 1.0}, one_hot=True), r"\(2,\)"),
        (lambda: sample_weights_from_class_weight([0], {0: 1.0}, one_hot=1), r"one_hot=1"),
    ],
)
def test_helper_rejects_bad_input_naming_the_argument_and_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_demo_prints_the_loss_the_weighted_metric_and_the_helpers_errors(demo_output):
    printed = demo_output("sample_and_class_weights")
    assert "loss 0.25, weighted mse 1" in printed
    assert "[1.0, 3.0, 3.0, 0.5]" in printed
    assert "class 2 appears in the labels" in printed
    assert "got key '0' (str)" in printed
