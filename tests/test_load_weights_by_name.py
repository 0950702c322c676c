"""Tests for recipes/load_weights_by_name.py: what each Keras does by name, and the helper."""

import pathlib
import zipfile

import h5py
import numpy as np
import pytest
from tensorflow import keras

from conftest import KERAS_MAJOR, outcome_of
from recipes.load_weights_by_name import LoadReport, load_weights_by_name
from tests.fixtures.make_keras2_fixtures import SubclassedModel, fixture_values
from tests.keras_said import outcome_and_said, weight_status

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
KERAS2_FUNCTIONAL = FIXTURES / "keras2_functional_weights.h5"
KERAS2_SUBCLASSED = FIXTURES / "keras2_subclassed_weights.h5"


def trunk_model(head_units=2, extra_layer=False, name="trunk_model", input_dim=4):
    """Input (input_dim,) -> Dense "features" (5) [-> Dense "extra" (5)] -> Dense "head"."""
    inputs = keras.Input((input_dim,), name="x")
    hidden = keras.layers.Dense(5, name="features")(inputs)
    if extra_layer:
        hidden = keras.layers.Dense(5, name="extra")(hidden)
    return keras.Model(inputs, keras.layers.Dense(head_units, name="head")(hidden), name=name)


def nested_model(flatten=False):
    """features -> a nested Sequential "trunk" holding Dense "inner" -> head.

    With `flatten`, "inner" is a top-level layer of the model instead.
    """
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(5, name="features")(inputs)
    inner = keras.layers.Dense(3, name="inner")
    hidden = inner(hidden) if flatten else keras.Sequential([inner], name="trunk")(hidden)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(hidden))


def randomized(model, seed):
    """Gives every weight distinct values, so a load that did nothing is visible."""
    generator = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(generator.normal(size=tuple(variable.shape)).astype(np.float32))
    return model


def weights_of(model, name):
    return [np.asarray(array) for array in model.get_layer(name).get_weights()]


def assert_layer_equal(model, source, name):
    for got, want in zip(weights_of(model, name), weights_of(source, name), strict=True):
        np.testing.assert_array_equal(got, want)


def assert_holds_keras2_fixture_values(model):
    """The fixture script's values: weight i of the file's model is fixture_values(shape, i)."""
    saved_order = weights_of(model, "features") + weights_of(model, "head")
    for index, array in enumerate(saved_order):
        np.testing.assert_array_equal(array, fixture_values(array.shape, offset=index))


# --- What Keras itself does with by_name ---------------------------------------------------


def test_keras_save_weights_to_h5_writes_a_legacy_h5_only_on_keras_2(tmp_path, version_split):
    model = trunk_model()
    path = tmp_path / "w.h5"
    observed = outcome_of(lambda: model.save_weights(str(path)), ["must end in `.weights.h5`"])
    if observed == "works":
        with h5py.File(path, "r") as f:
            assert [name for name in f.attrs["layer_names"]] == [b"x", b"features", b"head"] or [
                name for name in f.attrs["layer_names"]
            ] == ["x", "features", "head"]
    else:
        assert not path.exists()
    version_split(
        "model.save_weights('w.h5')",
        observed,
        {"keras<3": "works", "keras>=3": "ValueError: must end in `.weights.h5`"},
    )


def test_keras_2_loads_by_name_from_its_legacy_h5_weights_file(tmp_path, version_split):
    """On Keras 2 the bigger model gets "features" and "head"; "extra" keeps its values."""
    source = randomized(trunk_model(), seed=1)
    target = randomized(trunk_model(extra_layer=True), seed=2)
    extra_before = weights_of(target, "extra")
    path = tmp_path / "w.h5"
    if KERAS_MAJOR == 2:
        source.save_weights(str(path))
        observed = outcome_of(lambda: target.load_weights(str(path), by_name=True))
        assert_layer_equal(target, source, "features")
        assert_layer_equal(target, source, "head")
        np.testing.assert_array_equal(weights_of(target, "extra")[0], extra_before[0])
    else:
        observed = "no legacy .h5 weights file to load"
    version_split(
        "load_weights(save_weights('w.h5'), by_name=True) into a bigger model",
        observed,
        {"keras<3": "works", "keras>=3": "no legacy .h5 weights file to load"},
    )


def test_keras_by_name_from_a_full_model_h5_fails_before_keras_3_8(tmp_path, version_split):
    source = randomized(trunk_model(), seed=1)
    target = randomized(trunk_model(extra_layer=True), seed=2)
    path = tmp_path / "m.h5"
    source.save(str(path))
    observed = outcome_of(
        lambda: target.load_weights(str(path), by_name=True),
        ["Weight count mismatch for top-level weights"],
    )
    if observed == "works":
        assert_layer_equal(target, source, "features")
        assert_layer_equal(target, source, "head")
    version_split(
        "load_weights(model.save('m.h5'), by_name=True) into a bigger model",
        observed,
        {
            "keras<3": "works",
            "keras>=3,<3.8": "ValueError: Weight count mismatch for top-level weights",
            "keras>=3.8": "works",
        },
    )


def test_keras_by_name_on_a_weights_h5_is_ignored_on_keras_2_and_refused_on_keras_3(
    tmp_path, version_split
):
    """Keras 2 ignores by_name there and loads by position: a renamed layer still loads."""
    source = randomized(trunk_model(), seed=1)
    path = tmp_path / "w.weights.h5"
    source.save_weights(str(path))
    renamed = randomized(trunk_model(name="other"), seed=2)
    renamed.get_layer("head")._name = "renamed_head"
    observed = outcome_of(
        lambda: renamed.load_weights(str(path), by_name=True),
        ["Invalid keyword arguments", "only supports loading legacy"],
    )
    if observed == "works":
        np.testing.assert_array_equal(
            weights_of(renamed, "renamed_head")[0], weights_of(source, "head")[0]
        )
    version_split(
        "load_weights('w.weights.h5', by_name=True)",
        observed,
        {
            "keras<3": "works",
            "keras>=3,<3.11": "ValueError: Invalid keyword arguments",
            "keras>=3.11": "ValueError: only supports loading legacy",
        },
    )


def test_keras_loads_keras2_h5_weights_by_name(version_split):
    """Keras' own by_name load of the Keras 2.15 fixtures, functional and subclassed."""
    functional = randomized(trunk_model(extra_layer=True), seed=2)
    observed_functional = outcome_of(
        lambda: functional.load_weights(str(KERAS2_FUNCTIONAL), by_name=True),
        ["Weight count mismatch for top-level weights"],
    )
    if observed_functional == "works":
        assert_holds_keras2_fixture_values(functional)
    subclassed = SubclassedModel()
    subclassed(np.zeros((1, 4), np.float32))
    observed_subclassed = outcome_of(
        lambda: subclassed.load_weights(str(KERAS2_SUBCLASSED), by_name=True),
        ["Weight count mismatch"],
    )
    if observed_subclassed == "works":
        np.testing.assert_array_equal(
            subclassed.features.kernel.numpy(), fixture_values((4, 5), offset=0)
        )
    version_split(
        "load_weights(Keras 2.15 functional model's weights .h5, by_name=True)",
        observed_functional,
        {
            "keras<3": "works",
            "keras>=3,<3.8": "ValueError: Weight count mismatch for top-level weights",
            "keras>=3.8": "works",
        },
    )
    version_split(
        "load_weights(Keras 2.15 subclassed model's weights .h5, by_name=True)",
        observed_subclassed,
        {
            "keras<3": "works",
            "keras>=3,<3.8": "ValueError: Weight count mismatch",
            "keras>=3.8": "works",
        },
    )


def test_keras_load_into_an_unbuilt_subclassed_model_by_name(version_split):
    unbuilt = SubclassedModel()
    observed = outcome_of(
        lambda: unbuilt.load_weights(str(KERAS2_SUBCLASSED), by_name=True),
        ["Unable to load weights", "not been built", "unbuilt", "Weight count mismatch"],
    )
    assert observed != "works" or unbuilt.weights == []
    version_split(
        "load_weights(Keras 2 .h5, by_name=True) into an unbuilt subclassed model",
        observed,
        {
            "keras<3": "ValueError: Unable to load weights",
            "keras>=3": "ValueError: Weight count mismatch",
        },
    )


# --- skip_mismatch=True, as keras-yolo3 calls it ---------------------------------------------

SKIP_MESSAGES = (
    "Skipping loading weights for layer #1 (named features)",
    "Skipping loading top-level weights",
    "Could not load weights in object",
)


def skip_mismatch_target():
    """features takes 3 inputs, not 4 (its kernel differs, its bias fits); "extra" is not in
    the file; head fits."""
    return randomized(trunk_model(extra_layer=True, input_dim=3), seed=2)


def statuses(target, before, saved):
    """{layer: "loaded" / "kept" / "partly loaded"}; `saved` maps a layer name to its arrays."""
    return {
        name: weight_status(weights_of(target, name), before[name], saved.get(name, [None] * 2))
        for name in ("features", "extra", "head")
    }


@pytest.mark.parametrize("kind", ["full-model .h5", "Keras 2.15 weights .h5"])
def test_keras_skip_mismatch_on_a_legacy_h5_skips_weight_by_weight(kind, tmp_path, version_split):
    """A layer whose kernel does not fit but whose bias does gets the file's bias: half loaded."""
    if kind == "full-model .h5":
        source = randomized(trunk_model(), seed=1)
        path = tmp_path / "m.h5"
        source.save(str(path))
        saved = {name: weights_of(source, name) for name in ("features", "head")}
    else:
        path = KERAS2_FUNCTIONAL
        saved = {"features": [None, fixture_values((5,), 1)]}
        saved["head"] = [fixture_values((5, 2), 2), fixture_values((2,), 3)]
    target = skip_mismatch_target()
    before = {name: weights_of(target, name) for name in ("features", "extra", "head")}
    outcome, said = outcome_and_said(
        lambda: target.load_weights(str(path), by_name=True, skip_mismatch=True),
        said_fragments=SKIP_MESSAGES,
    )
    assert outcome == "works"
    assert statuses(target, before, saved) == {
        "features": "partly loaded",
        "extra": "kept",
        "head": "loaded",
    }
    kernel, bias = weights_of(target, "features")
    np.testing.assert_array_equal(kernel, before["features"][0])
    np.testing.assert_array_equal(bias, saved["features"][1])
    version_split(
        f"load_weights({kind}, by_name=True, skip_mismatch=True): what Keras says of the "
        "features kernel it skips",
        said,
        {
            "keras<3": "logged: Skipping loading weights for layer #1 (named features)",
            "keras>=3,<3.8": "UserWarning: Skipping loading top-level weights, "
            "UserWarning: Skipping loading weights for layer #1 (named features)",
            "keras>=3.8": "UserWarning: Skipping loading weights for layer #1 (named features)",
        },
    )


@pytest.mark.parametrize("suffix", ["keras", "weights.h5"])
def test_keras_skip_mismatch_does_not_make_by_name_work_on_keras_or_weights_h5(
    suffix, tmp_path, version_split
):
    """Keras 2 still loads by position: "head", in the file under that name and shape, gets
    nothing, and "extra", at the file head's position, is skipped with a warning."""
    source = randomized(trunk_model(), seed=1)
    path = tmp_path / f"m.{suffix}"
    if suffix == "keras":
        source.save(str(path))
    else:
        source.save_weights(str(path))
    target = randomized(trunk_model(extra_layer=True), seed=2)
    before = {name: weights_of(target, name) for name in ("features", "extra", "head")}
    outcome, said = outcome_and_said(
        lambda: target.load_weights(str(path), by_name=True, skip_mismatch=True),
        ["Invalid keyword arguments", "`by_name` only supports loading legacy '.h5'"],
        SKIP_MESSAGES,
    )
    if outcome == "works":
        loaded = statuses(
            target, before, {name: weights_of(source, name) for name in ("features", "head")}
        )
        outcome = ", ".join(f"{name} {status}" for name, status in loaded.items())
        outcome = f"works: {outcome}; says {said}"
    else:
        assert said == "nothing"
        for name, arrays in before.items():
            assert weight_status(weights_of(target, name), arrays, [None] * 2) == "kept"
    by_position = (
        "works: features loaded, extra kept, head kept; "
        "says UserWarning: Could not load weights in object"
    )
    version_split(
        f"load_weights('m.{suffix}', by_name=True, skip_mismatch=True) into a bigger model",
        outcome,
        {
            "keras<2.13": "works: features loaded, extra kept, head loaded; says nothing"
            if suffix == "keras"
            else by_position,
            "keras>=2.13,<3": by_position,
            "keras>=3,<3.11": "ValueError: Invalid keyword arguments",
            "keras>=3.11": "ValueError: `by_name` only supports loading legacy '.h5'",
        },
    )


# --- What a .weights.h5 records ------------------------------------------------------------


def test_a_weights_h5_is_keyed_by_class_name_and_position_not_layer_name(tmp_path, version_split):
    model = trunk_model()
    path = tmp_path / "w.weights.h5"
    model.save_weights(str(path))
    with h5py.File(path, "r") as f:
        keys = []
        f.visit(keys.append)
        datasets = sorted(key for key in keys if isinstance(f[key], h5py.Dataset))
        recorded = sorted(
            str(f[key].attrs["name"])
            for key in keys
            if key.endswith("vars") and "name" in f[key].attrs
        )
    assert not any("features" in key or "head" in key for key in keys)
    version_split(
        "keys of model.save_weights('w.weights.h5') for Dense 'features' then Dense 'head'",
        " ".join(datasets),
        {
            "keras<2.14": "_layer_checkpoint_dependencies/dense/vars/0 "
            "_layer_checkpoint_dependencies/dense/vars/1 "
            "_layer_checkpoint_dependencies/dense_2/vars/0 "
            "_layer_checkpoint_dependencies/dense_2/vars/1",
            "keras>=2.14,<2.15": "_layer_checkpoint_dependencies/dense/vars/0 "
            "_layer_checkpoint_dependencies/dense/vars/1 "
            "_layer_checkpoint_dependencies/dense_1/vars/0 "
            "_layer_checkpoint_dependencies/dense_1/vars/1",
            "keras>=2.15": "layers/dense/vars/0 layers/dense/vars/1 "
            "layers/dense_1/vars/0 layers/dense_1/vars/1",
        },
    )
    version_split(
        "layer names recorded in a .weights.h5",
        ", ".join(recorded) or "none",
        {"keras<3.6": "none", "keras>=3.6": "features, head, trunk_model, x"},
    )


def test_helper_refuses_a_weights_h5_without_names_and_says_what_to_save(tmp_path, version_split):
    source = randomized(trunk_model(), seed=1)
    target = randomized(trunk_model(), seed=2)
    path = tmp_path / "w.weights.h5"
    source.save_weights(str(path))
    observed = outcome_of(lambda: load_weights_by_name(target, path), ["records no layer names"])
    if observed == "works":
        assert_layer_equal(target, source, "features")
        assert_layer_equal(target, source, "head")
    else:
        with pytest.raises(ValueError, match=r"model\.save\(\"trunk\.keras\"\)"):
            load_weights_by_name(target, path)
    version_split(
        "load_weights_by_name from a .weights.h5",
        observed,
        {"keras<3.6": "ValueError: records no layer names", "keras>=3.6": "works"},
    )


# --- The helper ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["full-model .h5", ".keras", "weights .h5 (Keras 2)"])
def test_helper_loads_by_name_into_a_bigger_model(tmp_path, kind, observe):
    source = randomized(trunk_model(), seed=1)
    target = randomized(trunk_model(extra_layer=True), seed=2)
    extra_before = weights_of(target, "extra")
    if kind == "weights .h5 (Keras 2)":
        if KERAS_MAJOR == 3:  # Keras 3 writes no legacy weights file: use Keras 2.15's.
            report = load_weights_by_name(target, KERAS2_FUNCTIONAL)
            assert report == LoadReport(["features", "head"], [], ["extra"])
            assert_holds_keras2_fixture_values(target)
            observe(f"load_weights_by_name from {kind}", "loads by name")
            return
        path = tmp_path / "w.h5"
        source.save_weights(str(path))
    else:
        path = tmp_path / ("m.h5" if kind == "full-model .h5" else "m.keras")
        source.save(str(path))
    report = load_weights_by_name(target, path)
    assert report == LoadReport(loaded=["features", "head"], skipped=[], unmatched=["extra"])
    assert_layer_equal(target, source, "features")
    assert_layer_equal(target, source, "head")
    np.testing.assert_array_equal(weights_of(target, "extra")[0], extra_before[0])
    observe(f"load_weights_by_name from {kind}", "loads by name")


@pytest.mark.parametrize("fixture", [KERAS2_FUNCTIONAL, KERAS2_SUBCLASSED], ids=lambda p: p.stem)
@pytest.mark.parametrize("target_kind", ["functional", "subclassed"])
def test_helper_loads_keras_2_15_weights_files_on_every_stack(fixture, target_kind, observe):
    if target_kind == "functional":
        target = randomized(trunk_model(), seed=2)
    else:
        target = SubclassedModel()
        target(np.zeros((1, 4), np.float32))
        randomized(target, seed=2)
    report = load_weights_by_name(target, fixture)
    assert report == LoadReport(["features", "head"], [], [])
    assert_holds_keras2_fixture_values(target)
    observe(f"load_weights_by_name: Keras 2.15 {fixture.stem} into {target_kind}", "loads")


def test_helper_matches_nested_layers(tmp_path, version_split):
    """A legacy .h5 keeps a nested model's weights as one entry, loaded whole; a .keras
    names each layer inside it, so its layers also load into a model holding them at the
    top level."""
    source = randomized(nested_model(), seed=1)
    for suffix in ("h5", "keras"):
        path = tmp_path / f"nested.{suffix}"
        source.save(str(path))
        # Keras 2.12 writes m.keras as a legacy HDF5 file, keyed like the .h5.
        archive = zipfile.is_zipfile(path)
        target = randomized(nested_model(), seed=2)
        report = load_weights_by_name(target, path)
        assert report == LoadReport(["features", "inner" if archive else "trunk", "head"], [], [])
        for got, want in zip(target.get_weights(), source.get_weights(), strict=True):
            np.testing.assert_array_equal(got, want)
    flat = randomized(nested_model(flatten=True), seed=3)
    report = load_weights_by_name(flat, tmp_path / "nested.keras")
    if report.unmatched:
        assert report == LoadReport(["features", "head"], [], ["inner"])
        observed = "m.keras is HDF5: a nested model loads whole, a flat one misses 'inner'"
    else:
        assert report == LoadReport(["features", "inner", "head"], [], [])
        inner = source.get_layer("trunk").get_layer("inner").get_weights()[0]
        np.testing.assert_array_equal(weights_of(flat, "inner")[0], inner)
        observed = "whole from .h5; layer by layer from .keras, into a flat model too"
    version_split(
        "load_weights_by_name with a nested model",
        observed,
        {
            "keras<2.13": "m.keras is HDF5: a nested model loads whole, a flat one misses 'inner'",
            "keras>=2.13": "whole from .h5; layer by layer from .keras, into a flat model too",
        },
    )


def test_helper_inner_layers_of_a_nested_target_match_top_level_file_layers(tmp_path):
    """The target's nested model is not in the file: its layers are matched one by one."""
    source = randomized(nested_model(flatten=True), seed=1)
    path = tmp_path / "flat.h5"
    source.save(str(path))
    target = randomized(nested_model(), seed=2)
    report = load_weights_by_name(target, path)
    assert report == LoadReport(["features", "inner", "head"], [], [])
    np.testing.assert_array_equal(
        target.get_layer("trunk").get_layer("inner").get_weights()[0],
        weights_of(source, "inner")[0],
    )


def test_helper_shape_mismatch_names_the_layer_and_both_shapes_and_changes_nothing(tmp_path):
    source = randomized(trunk_model(head_units=2), seed=1)
    path = tmp_path / "m.keras"
    source.save(str(path))
    target = randomized(trunk_model(head_units=3), seed=2)
    before = target.get_weights()
    with pytest.raises(
        ValueError, match=r"layer 'head'.*\[\(5, 3\), \(3,\)\].*\[\(5, 2\), \(2,\)\]"
    ):
        load_weights_by_name(target, path)
    for got, want in zip(target.get_weights(), before, strict=True):
        np.testing.assert_array_equal(got, want)
    report = load_weights_by_name(target, path, skip_mismatch=np.bool_(True))
    assert report == LoadReport(["features"], ["head"], [])
    assert_layer_equal(target, source, "features")
    np.testing.assert_array_equal(target.get_layer("head").get_weights()[0], before[2])


@pytest.mark.parametrize("suffix", ["h5", "keras"])
def test_helper_skip_mismatch_leaves_a_layer_whole(suffix, tmp_path, observe):
    """Where Keras' skip_mismatch gives features the file's bias and keeps its kernel, the
    helper keeps both, and says so in the report."""
    source = randomized(trunk_model(), seed=1)
    path = tmp_path / f"m.{suffix}"
    source.save(str(path))
    target = skip_mismatch_target()
    before = {name: weights_of(target, name) for name in ("features", "extra", "head")}
    report = load_weights_by_name(target, path, skip_mismatch=True)
    assert report == LoadReport(loaded=["head"], skipped=["features"], unmatched=["extra"])
    assert statuses(target, before, {"head": weights_of(source, "head")}) == {
        "features": "kept",
        "extra": "kept",
        "head": "loaded",
    }
    observe(
        "load_weights_by_name(skip_mismatch=True), features' kernel mismatched, bias fitting",
        "features kept whole and reported skipped, head loaded",
    )


def test_helper_refuses_an_unbuilt_model(tmp_path):
    with pytest.raises(ValueError, match=r"model='unbuilt' has no weights yet: build it"):
        load_weights_by_name(SubclassedModel(name="unbuilt"), KERAS2_SUBCLASSED)


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"model": "trunk.h5"}, r"model=\'trunk\.h5\'"),
        ({"path": "missing.h5"}, r"path=\'missing\.h5\'"),
        ({"path": 3}, r"path=3"),
        ({"skip_mismatch": "yes"}, r"skip_mismatch=\'yes\'"),
    ],
)
def test_helper_bad_arguments_raise_a_value_error_naming_them(arguments, match):
    call = {"model": trunk_model(), "path": KERAS2_FUNCTIONAL, "skip_mismatch": False}
    call.update(arguments)
    with pytest.raises(ValueError, match=match):
        load_weights_by_name(**call)


def test_helper_refuses_a_file_that_is_not_a_keras_weights_file(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(ValueError, match=r"notes\.h5.*neither a \.keras archive nor an HDF5"):
        load_weights_by_name(trunk_model(), text)
    empty = tmp_path / "empty.h5"
    h5py.File(empty, "w").close()
    with pytest.raises(ValueError, match=r"empty\.h5.*not a Keras weights file"):
        load_weights_by_name(trunk_model(), empty)


def test_helper_refuses_a_keras_archive_without_layers(tmp_path):
    path = tmp_path / "subclassed.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", '{"class_name": "SubclassedModel", "config": {}}')
    with pytest.raises(ValueError, match=r"subclassed\.keras.*lists no layers"):
        load_weights_by_name(trunk_model(), path)
