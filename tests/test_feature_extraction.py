"""Tests for recipes/feature_extraction.py: feature models, Grad-CAM against a closed form.

The network is conv map A (3x3 Conv2D, 2 filters, on 6x6x1 images) -> ReLU -> global average
pooling over the 4x4 map -> Dense(3) with kernel W. Its class score is
S_c = sum_k W[k, c] * mean_ij ReLU(A[i, j, k]) + bias_c, so dS_c/dA[i, j, k] is W[k, c] / 16
where A > 0 and 0 elsewhere, and dS_c/dReLU(A)[i, j, k] is W[k, c] / 16 everywhere. Every
weight is a multiple of 1/4, so those gradients are exact in float32. The conv map itself is
computed with numpy from the same kernel, never with Keras.
"""

import re

import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from conftest import outcome_of
from recipes.feature_extraction import (
    ConvClassifier,
    class_score_gradients,
    feature_model,
    grad_cam,
    layer_output_shape,
    nested_feature_model,
    normalize_heatmaps,
)
from tests.keras_said import outcome_and_said

IMAGES = np.random.default_rng(5).normal(size=(3, 6, 6, 1)).astype("float32")
CONV_KERNEL = (np.random.default_rng(6).integers(-4, 5, size=(3, 3, 1, 2)) / 4).astype("float32")
CONV_BIAS = np.array([0.25, -0.5], "float32")
DENSE_KERNEL = np.array([[0.5, -0.75, 1.0], [-0.25, 1.25, 0.5]], "float32")
DENSE_BIAS = np.array([0.0, 0.25, -0.25], "float32")
WEIGHTS = [CONV_KERNEL, CONV_BIAS, DENSE_KERNEL, DENSE_BIAS]
POSITIONS = 4 * 4


# --- numpy, by hand ----------------------------------------------------------------------------


def numpy_conv_map(images, conv_bias=CONV_BIAS):
    """Keras' Conv2D ("valid", stride 1) is a cross-correlation: sum of patch * kernel + bias."""
    rows, columns = images.shape[1] - 2, images.shape[2] - 2
    conv_map = np.zeros((len(images), rows, columns, 2))
    for row in range(rows):
        for column in range(columns):
            patch = images[:, row : row + 3, column : column + 3, :].astype(np.float64)
            conv_map[:, row, column, :] = np.einsum("nabc,abck->nk", patch, CONV_KERNEL)
    return conv_map + conv_bias


def closed_form_gradients(conv_map, class_index, after_relu):
    """dS/dA from the formula in the module docstring."""
    per_channel = DENSE_KERNEL[:, class_index] / POSITIONS
    if after_relu:
        return np.broadcast_to(per_channel, conv_map.shape)
    return per_channel * (conv_map > 0)


def numpy_grad_cam(feature_map, gradients):
    weights = gradients.mean(axis=(1, 2))
    return np.maximum(np.einsum("nhwk,nk->nhw", feature_map, weights), 0.0)


# --- models with the known weights -----------------------------------------------------------


def classifier_layers():
    return [
        keras.layers.Conv2D(2, 3, name="conv"),
        keras.layers.ReLU(name="relu"),
        keras.layers.GlobalAveragePooling2D(name="pool"),
        keras.layers.Dense(3, name="head"),
    ]


def functional_classifier(conv_bias=CONV_BIAS):
    inputs = keras.Input((6, 6, 1))
    outputs = inputs
    for layer in classifier_layers():
        outputs = layer(outputs)
    model = keras.Model(inputs, outputs)
    model.set_weights([CONV_KERNEL, conv_bias, DENSE_KERNEL, DENSE_BIAS])
    return model


def sequential_classifier(form):
    layers = classifier_layers()
    if form == "keras.Input":
        layers.insert(0, keras.Input((6, 6, 1)))
    elif form == "input_shape=":
        layers[0] = keras.layers.Conv2D(2, 3, name="conv", input_shape=(6, 6, 1))
    return keras.Sequential(layers)


def trunk_and_head():
    """A Functional trunk (conv -> relu -> pool), to be used as one layer, and a Dense head."""
    trunk_inputs = keras.Input((6, 6, 1))
    features = trunk_inputs
    for layer in classifier_layers()[:3]:
        features = layer(features)
    return keras.Model(trunk_inputs, features, name="trunk"), keras.layers.Dense(3, name="head")


def nested_classifier(outer_style):
    trunk, head = trunk_and_head()
    if outer_style == "Sequential":
        model = keras.Sequential([keras.Input((6, 6, 1)), trunk, head])
    else:
        inputs = keras.Input((6, 6, 1))
        model = keras.Model(inputs, head(trunk(inputs)))
    model.set_weights(WEIGHTS)
    return model


@pytest.fixture(scope="module")
def classifier():
    """The Functional classifier with the known weights; no test changes it."""
    return functional_classifier()


@pytest.fixture(scope="module")
def grad_models(classifier):
    """inputs -> [map, scores] for the conv map and the map after the ReLU."""
    return {name: feature_model(classifier, name, include_output=True) for name in ("conv", "relu")}


# --- Feature models --------------------------------------------------------------------------


def test_feature_model_of_a_functional_model_gives_the_maps_numpy_computes(classifier, observe):
    model = classifier
    extractor = feature_model(model, ["conv", "relu"])
    conv_map, relu_map = (np.asarray(output) for output in extractor(IMAGES))
    expected = numpy_conv_map(IMAGES)
    np.testing.assert_allclose(conv_map, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(relu_map, np.maximum(expected, 0), rtol=0, atol=1e-5)
    assert (expected > 0).any() and (expected < 0).any(), "the ReLU must matter"
    assert layer_output_shape(model.get_layer("conv")) == (None, 4, 4, 2)
    observe("feature_model(functional, ['conv', 'relu'])", "maps equal numpy within 1e-5")


def sequential_attribute_outcomes(form):
    """What `.input` and `.output` do before any build, after build() and after a call; and
    the model after build()."""
    outcomes, built = [], None
    for state in ("never called", "after build()", "after a call on data"):
        model = sequential_classifier(form)
        if state == "after build()":
            model.build((None, 6, 6, 1))
            built = model
        elif state == "after a call on data":
            model(IMAGES)
        seen = {}
        for attribute in ("input", "output"):
            fragments = (
                f"has never been called and thus has no defined {attribute}",
                f"'_nested_{attribute}s'",
            )
            seen[attribute] = outcome_of(lambda m=model, a=attribute: getattr(m, a), fragments)
        # `.input` fails exactly when `.output` does, with the same text but for that word.
        assert seen["input"] == seen["output"].replace("output", "input"), seen
        # The lists are there whenever the model has a graph, on every stack.
        if seen["output"] == "works" or state != "never called" or form != "no Input":
            assert len(model.inputs) == 1 and len(model.outputs) == 1
        outcomes.append(f"{state}: {seen['output']}")
    return "; ".join(outcomes), built


def expected_table(keras_2_never_called):
    def every_state(outcome):
        return f"never called: {outcome}; after build(): {outcome}; after a call on data: {outcome}"

    message = "has never been called and thus has no defined output"
    return {
        "keras<3": f"never called: {keras_2_never_called}; after build(): works; "
        "after a call on data: works",
        "keras>=3,<3.6": every_state(f"ValueError: {message}"),
        "keras>=3.6": every_state(f"AttributeError: {message}"),
    }


@pytest.mark.parametrize("form", ["keras.Input", "input_shape=", "no Input"])
def test_sequential_output_raises_on_keras_3_and_feature_model_works_from_inputs_0(
    form, version_split, observe
):
    outcomes, model = sequential_attribute_outcomes(form)
    keras_2_never_called = "AttributeError: '_nested_outputs'" if form == "no Input" else "works"
    version_split(
        f"Sequential ({form}): model.input / model.output",
        outcomes,
        expected_table(keras_2_never_called),
    )
    # The portable route: feature_model reads model.inputs[0] and model.outputs[0].
    model.set_weights(WEIGHTS)
    grad_model = feature_model(model, "conv", include_output=True)
    conv_map, scores = (np.asarray(output) for output in grad_model(IMAGES))
    np.testing.assert_allclose(conv_map, numpy_conv_map(IMAGES), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(scores, np.asarray(model(IMAGES)))
    # keras-team/keras-io#1903's route: the last layer's output instead of model.output.
    last = keras.Model(model.inputs[0], model.layers[-1].output)
    np.testing.assert_array_equal(np.asarray(last(IMAGES)), scores)
    observe(f"feature_model(Sequential with {form}, after build())", "works")


def test_a_sequential_model_never_built_has_no_graph_to_cut(version_split):
    model = sequential_classifier("no Input")
    with pytest.raises(ValueError, match=r"model 'sequential.*' \(Sequential\) has no input"):
        feature_model(model, "conv")
    raw = outcome_of(
        lambda: keras.Model(model.inputs, model.get_layer("conv").output),
        ("has no inbound nodes", "has no defined inputs yet"),
    )
    version_split(
        "keras.Model(model.inputs, conv.output) of a Sequential never built",
        raw,
        {
            "keras<3": "AttributeError: has no inbound nodes",
            "keras>=3,<3.6": "ValueError: has no defined inputs yet",
            "keras>=3.6": "AttributeError: has no defined inputs yet",
        },
    )


def test_layer_output_shape_is_gone_on_keras_3_and_the_portable_form_works(
    classifier, version_split
):
    layer = classifier.get_layer("conv")
    holder = []
    fragments = ("object has no attribute 'output_shape'",)
    outcome = outcome_of(lambda: holder.append(layer.output_shape), fragments)
    version_split(
        "layer.output_shape",
        f"works: {holder[0]}" if holder else outcome,
        {
            "keras<3": "works: (None, 4, 4, 2)",
            "keras>=3": "AttributeError: object has no attribute 'output_shape'",
        },
    )
    assert layer_output_shape(layer) == (None, 4, 4, 2)
    assert layer_output_shape(classifier.get_layer("pool")) == (None, 2)


def structure_warning(model, build_inputs):
    """(outcome of building keras.Model(build_inputs(model), ...), what calling it on one array
    said): the structure of a list of inputs against a single array."""
    built = []
    outcome = outcome_of(
        lambda: built.append(
            keras.Model(build_inputs(model), [model.get_layer("conv").output, model.outputs[0]])
        ),
        ("must be KerasTensors",),
    )
    if not built:
        return outcome
    call_outcome, said = outcome_and_said(
        lambda: built[0](IMAGES), said_fragments=("doesn't match the expected structure",)
    )
    assert call_outcome == "works"
    return f"built; called on one array: {said}"


def test_model_inputs_list_called_on_one_array_warns_from_keras_3_6(classifier, version_split):
    warned = "built; called on one array: UserWarning: doesn't match the expected structure"
    silent = "built; called on one array: nothing"
    version_split(
        "keras.Model(model.inputs, outputs) called on one array",
        structure_warning(classifier, lambda model: model.inputs),
        {"keras<3.6": silent, "keras>=3.6": warned},
    )
    version_split(
        "keras.Model([model.inputs], outputs) called on one array",
        structure_warning(classifier, lambda model: [model.inputs]),
        {
            "keras<3": silent,
            "keras>=3,<3.4": "ValueError: must be KerasTensors",
            "keras>=3.4,<3.6": silent,
            "keras>=3.6": warned,
        },
    )


def test_model_inputs_0_called_on_one_array_is_silent_everywhere(classifier, observe):
    assert structure_warning(classifier, lambda model: model.inputs[0]) == (
        "built; called on one array: nothing"
    )
    observe("keras.Model(model.inputs[0], outputs) called on one array", "no warning")


# --- Grad-CAM against the closed form --------------------------------------------------------


@pytest.mark.parametrize("layer_name", ["conv", "relu"])
def test_grad_cam_gradient_is_exact_and_heatmaps_equal_numpy(layer_name, grad_models, observe):
    conv_map = numpy_conv_map(IMAGES)
    for class_index in range(3):
        _, gradients = class_score_gradients(grad_models[layer_name], IMAGES, class_index)
        expected = closed_form_gradients(conv_map, class_index, after_relu=layer_name == "relu")
        np.testing.assert_array_equal(gradients, expected.astype("float32"))
        if layer_name == "conv":
            # The ReLU's mask matters: some positions have gradient 0, no image has all 0.
            assert np.any(gradients == 0) and np.all(np.abs(gradients).max(axis=(1, 2)) > 0)
    feature_map = np.maximum(conv_map, 0) if layer_name == "relu" else conv_map
    heatmaps = grad_cam(grad_models[layer_name], IMAGES, 2)
    expected_heatmaps = numpy_grad_cam(feature_map, expected)
    assert heatmaps.shape == (3, 4, 4) and expected_heatmaps.max() > 0
    np.testing.assert_allclose(heatmaps, expected_heatmaps, rtol=0, atol=1e-5)
    observe(f"d score / d {layer_name} map", "kernel[k, c] / (H*W) (masked by map > 0), exactly")
    observe(f"grad_cam on the {layer_name} map", "equals numpy within 1e-5")


def test_keras_io_batch_pooling_gives_every_image_the_batch_mean_weights(grad_models, observe):
    grad_model = grad_models["conv"]
    feature_map, gradients = class_score_gradients(grad_model, IMAGES, 1)
    per_image = gradients.mean(axis=(1, 2))
    keras_io = gradients.mean(axis=(0, 1, 2))  # the example's pooled_grads, for a batch
    np.testing.assert_allclose(keras_io, per_image.mean(axis=0), rtol=1e-6)
    assert not np.allclose(per_image, keras_io), "the images' own weights differ"
    # grad_cam's heatmap of each image is the one it gets alone.
    together = grad_cam(grad_model, IMAGES, 1)
    for index in range(len(IMAGES)):
        alone = grad_cam(grad_model, IMAGES[index : index + 1], 1)
        np.testing.assert_allclose(together[index], alone[0], rtol=0, atol=1e-6)
    batch_mixed = np.maximum(np.einsum("nhwk,k->nhw", feature_map, keras_io), 0)
    assert not np.allclose(batch_mixed, together)
    observe("keras-io pooled_grads over axis (0, 1, 2) on a batch", "batch-mean channel weights")


def test_a_score_from_a_second_forward_pass_has_no_gradient(classifier, observe):
    model = classifier
    extractor = feature_model(model, "conv")
    images = tf.convert_to_tensor(IMAGES)
    with tf.GradientTape() as tape:
        feature_map, scores = extractor(images), model(images)
        class_score = scores[:, 0]
    assert tape.gradient(class_score, feature_map) is None
    with pytest.raises(ValueError, match="does not depend on the feature map"):
        grad_cam(lambda batch: (extractor(batch), model(batch)), IMAGES, 0)
    observe("Grad-CAM with the map and the score from two calls", "gradient None")


def test_keras_io_normalization_gives_nan_for_a_map_of_zeros(observe):
    # A bias of -100 kills the ReLU: the relu map is zero everywhere, its gradient is not.
    dead = functional_classifier(conv_bias=np.array([-100.0, -100.0], "float32"))
    grad_model = feature_model(dead, "relu", include_output=True)
    feature_map, gradients = class_score_gradients(grad_model, IMAGES, 1)
    assert not feature_map.any() and gradients.any()
    heatmaps = grad_cam(grad_model, IMAGES, 1)
    assert not heatmaps.any()
    keras_io = tf.maximum(heatmaps[0], 0) / tf.math.reduce_max(heatmaps[0])
    assert np.isnan(np.asarray(keras_io)).all()
    assert not normalize_heatmaps(heatmaps).any()
    observe("keras-io heatmap normalization of a map of zeros", "NaN everywhere")


@pytest.mark.stack_independent
def test_normalize_heatmaps_spans_zero_to_one_per_map_and_keeps_zero_maps():
    """numpy only. Not hypothesis: with TensorFlow loaded its 30 examples cost over a second."""
    random = np.random.default_rng(0)
    heatmaps = random.uniform(0, 200, size=(24, 3, 4)) * (random.random((24, 3, 4)) < 0.7)
    heatmaps[:4] = 0.0  # maps of zeros stay zeros
    heatmaps[4] = 5e-324  # the smallest subnormal is its own peak
    heatmaps[5] = np.eye(3, 4) * 1e300  # no overflow

    normalized = normalize_heatmaps(heatmaps)
    assert normalized.shape == heatmaps.shape and np.isfinite(normalized).all()
    assert ((normalized >= 0) & (normalized <= 1)).all()
    peaks = heatmaps.max(axis=(1, 2))
    # A map with a positive peak reaches exactly 1 and keeps its proportions; zeros stay zeros.
    assert np.array_equal(normalized.max(axis=(1, 2)), (peaks > 0).astype(float))
    assert np.allclose(normalized * peaks[:, None, None], heatmaps, rtol=1e-12, atol=1e-300)


# --- Nested models ---------------------------------------------------------------------------


def test_an_inner_layer_output_is_not_connected_to_the_outer_inputs(version_split, observe):
    model = nested_classifier("Functional")
    with pytest.raises(ValueError, match="No such layer: conv"):
        model.get_layer("conv")
    observe("outer_model.get_layer(name of a layer inside the trunk)", "ValueError: No such layer")
    inner_conv = model.get_layer("trunk").get_layer("conv")
    built = []
    outcome = outcome_of(
        lambda: built.append(keras.Model(model.inputs, [inner_conv.output, model.outputs[0]])),
        ("Graph disconnected", "is not connected to `inputs`"),
    )
    if built:
        # Not outcome_of: this KeyError's text is a tensor's id() and the whole input array,
        # different on every run, so it is no message a user can search for.
        try:
            built[0](IMAGES)
            outcome = "built; called: works"
        except KeyError:
            outcome = "built; called: KeyError"
    else:
        outcome = f"at build: {outcome}"
    version_split(
        "keras.Model(outer.inputs, [inner_layer.output, outer.output])",
        outcome,
        {
            "keras<3": "at build: ValueError: Graph disconnected",
            "keras>=3,<3.14": "built; called: KeyError",
            "keras>=3.14": "at build: ValueError: is not connected to `inputs`",
        },
    )


@pytest.mark.parametrize("outer_style", ["Functional", "Sequential"])
def test_nested_feature_model_gives_the_inner_map_and_the_outer_output(outer_style, observe):
    model = nested_classifier(outer_style)
    with pytest.raises(ValueError, match="No such layer: conv"):
        model.get_layer("conv")
    two_outputs = nested_feature_model(model, "trunk", "conv")
    conv_map, scores = (np.asarray(output) for output in two_outputs(IMAGES))
    np.testing.assert_array_equal(scores, np.asarray(model(IMAGES)))
    inner_conv = model.get_layer("trunk").get_layer("conv")
    np.testing.assert_array_equal(conv_map, np.asarray(inner_conv(IMAGES)))
    np.testing.assert_allclose(conv_map, numpy_conv_map(IMAGES), rtol=0, atol=1e-5)
    # Same layers, not copies: the weights are the trunk's and the head's own.
    assert {id(weight) for weight in two_outputs.weights} == {id(w) for w in model.weights}
    conv = numpy_conv_map(IMAGES)
    heatmaps = grad_cam(two_outputs, IMAGES, 2)
    expected = numpy_grad_cam(conv, closed_form_gradients(conv, 2, after_relu=False))
    np.testing.assert_allclose(heatmaps, expected, rtol=0, atol=1e-5)
    observe(f"nested_feature_model ({outer_style} outer model)", "equals the model and numpy")


def test_a_sequential_starting_with_a_trunk_model_is_built_from_keras_3_5(version_split):
    """keras.Sequential([pretrained_trunk, Dense(...)]), no keras.Input: the fine-tuning form."""
    model = keras.Sequential(list(trunk_and_head()))
    outcome = outcome_of(lambda: model.inputs, ("has no defined inputs yet",))
    version_split(
        "keras.Sequential([trunk_model, Dense]) without keras.Input: model.inputs",
        outcome,
        {
            "keras<3": "works",
            "keras>=3,<3.5": "ValueError: has no defined inputs yet",
            "keras>=3.5": "works",
        },
    )
    if outcome != "works":
        with pytest.raises(ValueError, match=r"\(Sequential\) has no input tensors"):
            nested_feature_model(model, "trunk", "conv")
    # build() gives it its graph on every stack.
    model.build((None, 6, 6, 1))
    model.set_weights(WEIGHTS)
    conv_map, scores = nested_feature_model(model, "trunk", "conv")(IMAGES)
    np.testing.assert_array_equal(np.asarray(scores), np.asarray(model(IMAGES)))
    np.testing.assert_allclose(np.asarray(conv_map), numpy_conv_map(IMAGES), rtol=0, atol=1e-5)


# --- Subclassed models -----------------------------------------------------------------------


def test_a_subclassed_model_has_no_inputs_and_its_layers_no_output(version_split):
    model = ConvClassifier()
    model(IMAGES)
    holder = []
    inputs = outcome_of(lambda: holder.append(model.inputs), ("has no attribute 'inputs'",))
    conv_output = outcome_of(
        lambda: model.conv.output,
        ("has no inbound nodes", "has never been called and thus has no defined output"),
    )
    with pytest.raises(ValueError, match=r"\(ConvClassifier\) has no input tensors"):
        feature_model(model, "conv")
    never = "has never been called and thus has no defined output"
    version_split(
        "subclassed model: model.inputs, and a layer's .output",
        f"inputs: {f'works: {holder[0]!r}' if holder else inputs}; conv.output: {conv_output}",
        {
            "keras<3": "inputs: works: None; conv.output: AttributeError: has no inbound nodes",
            "keras>=3,<3.6": "inputs: AttributeError: has no attribute 'inputs'; "
            f"conv.output: ValueError: {never}",
            "keras>=3.6": "inputs: AttributeError: has no attribute 'inputs'; "
            f"conv.output: AttributeError: {never}",
        },
    )


def test_a_subclassed_model_returning_its_map_from_call_gives_the_same_grad_cam(observe):
    model = ConvClassifier()
    model(IMAGES)
    model.set_weights(WEIGHTS)
    conv = numpy_conv_map(IMAGES)
    heatmaps = grad_cam(lambda x: model(x, return_features=True), IMAGES, 1)
    expected = numpy_grad_cam(conv, closed_form_gradients(conv, 1, after_relu=False))
    assert expected.max() > 0
    np.testing.assert_allclose(heatmaps, expected, rtol=0, atol=1e-5)
    observe("grad_cam through call(return_features=True)", "equals numpy within 1e-5")


# --- Bad input -------------------------------------------------------------------------------


def test_feature_functions_reject_bad_arguments(classifier):
    model = classifier
    with pytest.raises(ValueError, match=r"model must be a keras Model, got 'model'"):
        feature_model("model", "conv")
    with pytest.raises(
        ValueError, match=r"layer_names must be a name or a non-empty list, got \[\]"
    ):
        feature_model(model, [])
    with pytest.raises(ValueError, match=r"layer_names: no layer 'missing'"):
        feature_model(model, ["conv", "missing"])
    with pytest.raises(ValueError, match=r"trunk_name: no layer 'trunk'"):
        nested_feature_model(model, "trunk", "conv")
    with pytest.raises(ValueError, match=r"trunk_name: 'conv' is a Conv2D, not a model"):
        nested_feature_model(model, "conv", "conv")
    with pytest.raises(ValueError, match=r"layer_name: no layer 'missing' in trunk 'trunk'"):
        nested_feature_model(nested_classifier("Functional"), "trunk", "missing")
    with pytest.raises(ValueError, match=r"layer must be a keras Layer, got None"):
        layer_output_shape(None)


def test_grad_cam_rejects_bad_arguments(classifier, grad_models):
    grad_model = grad_models["conv"]
    cases = [
        (("not callable", IMAGES, 0), r"features_and_scores must be callable, got 'not callable'"),
        (
            (grad_model, IMAGES[0], 0),
            r"images must be a batch \(N, H, W, C\), got shape \(6, 6, 1\)",
        ),
        ((grad_model, IMAGES, 1.0), r"class_index must be an int, got 1\.0"),
        ((grad_model, IMAGES, True), r"class_index must be an int, got True"),
        ((grad_model, IMAGES, -1), r"class_index must be >= 0, got -1"),
        ((grad_model, IMAGES, 3), r"class_index=3 but there are 3 classes"),
        ((feature_model(classifier, "conv"), IMAGES, 0), r"must return \(feature"),
    ]
    for arguments, match in cases:
        with pytest.raises(ValueError, match=match):
            grad_cam(*arguments)
    for heatmaps, match in [
        (np.zeros((4, 4)), r"heatmaps must have shape \(N, H, W\), got shape \(4, 4\)"),
        (-np.ones((1, 2, 2)), r"finite and >= 0"),
        (np.full((1, 2, 2), np.nan), r"finite and >= 0"),
    ]:
        with pytest.raises(ValueError, match=match):
            normalize_heatmaps(heatmaps)


def test_demo_prints_the_heatmaps_and_the_sequential_answer(demo_output):
    printed = demo_output("feature_extraction")
    assert "conv output shape: (None, 4, 4, 2)" in printed
    assert "Grad-CAM heatmaps: (2, 4, 4)" in printed
    assert "Sequential model.outputs[0]: (None, 4, 4, 2)" in printed
    sequential_line = re.search(r"Sequential model\.output: (.*)", printed).group(1)
    assert ("has never been called" in sequential_line) == hasattr(keras, "version")
