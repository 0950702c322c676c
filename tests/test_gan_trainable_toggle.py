"""Tests for recipes/gan_trainable_toggle.py: which model each phase updates, weight by weight."""

import math
import warnings

import numpy as np
import pytest
from tensorflow import keras

from conftest import outcome_of
from recipes.gan_trainable_toggle import (
    GanTrainer,
    build_combined,
    build_discriminator,
    build_generator,
    compile_gan,
    keras_gan_optimizer,
    keras_gan_pattern,
    train_discriminator_phase,
    train_generator_phase,
)

BATCH = 16
NO_TRAINABLE_WEIGHTS = "does not have any trainable weights"


def batch(seed=1):
    """Real samples in (-1, 1) like Keras-GAN's rescaled images, noise, and both labels."""
    random = np.random.default_rng(seed)
    real = np.tanh(random.normal(loc=1.0, size=(BATCH, 2))).astype("float32")
    noise = random.normal(size=(BATCH, 2)).astype("float32")
    return real, noise, np.ones((BATCH, 1), "float32"), np.zeros((BATCH, 1), "float32")


def snapshot(model):
    return [weight.copy() for weight in model.get_weights()]


def changed(before, model):
    """True when any weight of `model` differs from `before` in any bit."""
    after = model.get_weights()
    assert len(after) == len(before) > 0
    return any(not np.array_equal(old, new) for old, new in zip(before, after, strict=True))


def moved(generator_before, discriminator_before, generator, discriminator):
    """Which models a phase changed: "G", "D", "G and D" or "neither"."""
    names = [
        name
        for name, before, model in (
            ("G", generator_before, generator),
            ("D", discriminator_before, discriminator),
        )
        if changed(before, model)
    ]
    return " and ".join(names) or "neither"


def compile_with_one_optimizer(generator, discriminator, optimizer):
    """compile_gan's order and models, but one optimizer instance for D and combined."""
    discriminator.trainable = False
    combined = build_combined(generator, discriminator)
    combined.compile(loss="binary_crossentropy", optimizer=optimizer)
    discriminator.trainable = True
    discriminator.compile(loss="binary_crossentropy", optimizer=optimizer, metrics=["accuracy"])
    return combined


def constant_discriminator():
    """D scoring every sample sigmoid(2) ~ 0.881: real samples (label 1) all right, fake ones
    (label 0) all wrong. Trained at learning rate 0 it keeps that, so every batch's loss and
    accuracy are known.
    """
    discriminator = build_discriminator()
    output = discriminator.layers[-1]
    output.set_weights([np.zeros_like(output.get_weights()[0]), np.full((1,), 2.0, "float32")])
    return discriminator


SCORE = 1 / (1 + math.exp(-2.0))
REAL_LOSS, FAKE_LOSS = -math.log(SCORE), -math.log(1 - SCORE)


# --- Keras-GAN's code as it is written ------------------------------------------------------


def test_keras_gan_pattern_discriminator_training_depends_on_the_keras_version(version_split):
    generator, discriminator = build_generator(), build_discriminator()
    keras_gan_pattern(generator, discriminator)
    real, noise, ones, zeros = batch()
    fake = generator.predict(noise, verbose=0)
    before = snapshot(discriminator)
    results = []

    def train_discriminator():
        results.append(discriminator.train_on_batch(real, ones))
        results.append(discriminator.train_on_batch(fake, zeros))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Keras 3.6 and 3.7: compiling `combined` unset D's loss tracker (keras#20474).
        outcome = outcome_of(train_discriminator, ["'NoneType' object has no attribute"])
    if outcome == "works":
        # Loss and accuracy come back either way, so nothing in the training loop looks wrong.
        assert len(results) == 2 and np.all(np.isfinite(np.asarray(results, "float64")))
        messages = [str(warning.message) for warning in caught]
        warned = any(NO_TRAINABLE_WEIGHTS in message for message in messages)
        warning = "UserWarning: The model does not have any trainable weights"
        outcome = (
            f"{'updates D' if changed(before, discriminator) else 'D unchanged'}, "
            f"{warning if warned else 'no warning'}"
        )
    else:
        assert not changed(before, discriminator)
    version_split(
        "Keras-GAN pattern: D.train_on_batch after D.trainable = False and compiling combined",
        outcome,
        {
            "keras<3": "updates D, no warning",
            "keras>=3,<3.6": "D unchanged, UserWarning: The model does not have any trainable "
            "weights",
            "keras>=3.6,<3.8": "AttributeError: 'NoneType' object has no attribute",
            "keras>=3.8": "D unchanged, UserWarning: The model does not have any trainable weights",
        },
    )


def test_keras_gan_shared_adam_fails_the_generator_phase_at_every_step_on_keras_2(version_split):
    generator, discriminator = build_generator(), build_discriminator()
    combined = keras_gan_pattern(generator, discriminator)
    real, noise, ones, zeros = batch()
    outcomes = []
    for _ in range(2):
        fake = generator.predict(noise, verbose=0)
        # Keras-GAN's D phase; on Keras 3.6 and 3.7 it raises (the test above), and the
        # generator phase is tried all the same.
        outcome_of(
            lambda fake=fake: (
                discriminator.train_on_batch(real, ones),
                discriminator.train_on_batch(fake, zeros),
            )
        )
        generator_before, discriminator_before = snapshot(generator), snapshot(discriminator)
        outcome = outcome_of(
            lambda: combined.train_on_batch(noise, ones),
            ["The optimizer cannot recognize variable"],
        )
        phase_moved = moved(generator_before, discriminator_before, generator, discriminator)
        outcomes.append(f"{outcome}; updated: {phase_moved}")
    assert outcomes[0] == outcomes[1], outcomes
    version_split(
        "Keras-GAN loop, one Adam for D and combined: combined.train_on_batch after the D phase",
        outcomes[0],
        {
            "keras<2.16": "KeyError: The optimizer cannot recognize variable; updated: neither",
            # TensorFlow 2.16's AutoGraph wraps tf-keras 2.16's KeyError in a StagingError.
            "keras>=2.16,<2.17": "StagingError: The optimizer cannot recognize variable; "
            "updated: neither",
            "keras>=2.17,<3": "KeyError: The optimizer cannot recognize variable; updated: neither",
            "keras>=3": "works; updated: G",
        },
    )


def test_train_on_batch_reports_a_running_mean_on_keras_3_before_3_15(version_split):
    discriminator = constant_discriminator()
    # As Keras-GAN compiles D, at learning rate 0.
    discriminator.compile(
        loss="binary_crossentropy", optimizer=keras.optimizers.Adam(0.0), metrics=["accuracy"]
    )
    real, noise, ones, zeros = batch()
    # Keras-GAN's two D calls; their results are what it averages and prints.
    on_real = discriminator.train_on_batch(real, ones, return_dict=True)
    on_fake = discriminator.train_on_batch(noise, zeros, return_dict=True)
    assert float(on_real["accuracy"]) == 1.0
    assert float(on_real["loss"]) == pytest.approx(REAL_LOSS, abs=1e-5)
    accuracy, loss = float(on_fake["accuracy"]), float(on_fake["loss"])
    if accuracy == 0.0:
        assert loss == pytest.approx(FAKE_LOSS, abs=1e-5)
        outcome = "the batch's own (accuracy 0)"
    else:
        assert accuracy == 0.5
        assert loss == pytest.approx((REAL_LOSS + FAKE_LOSS) / 2, abs=1e-5)
        outcome = "the mean over both calls (accuracy 0.5)"
    version_split(
        "train_on_batch's loss and accuracy on the second of two calls after compile",
        outcome,
        {
            "keras<3": "the batch's own (accuracy 0)",
            "keras>=3,<3.15": "the mean over both calls (accuracy 0.5)",
            "keras>=3.15": "the batch's own (accuracy 0)",
        },
    )


def test_what_a_compiled_model_trains_after_its_trainable_flag_changes(version_split):
    discriminator = build_discriminator()
    discriminator.compile(loss="binary_crossentropy", optimizer=keras_gan_optimizer())
    real, _, ones, _ = batch()
    discriminator.train_on_batch(real, ones)
    discriminator.trainable = False
    results = []
    for size in (BATCH, 5):  # The batch size of the first call, then a new one.
        before = snapshot(discriminator)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras 3's warning for the retrace.
            discriminator.train_on_batch(real[:size], ones[:size])
        results.append("updates D" if changed(before, discriminator) else "D unchanged")
    version_split(
        "D.trainable = False after D's first train_on_batch: the next at the same, then a new "
        "batch size",
        f"same batch size: {results[0]}; new batch size: {results[1]}",
        {
            "keras<3": "same batch size: updates D; new batch size: updates D",
            "keras>=3": "same batch size: updates D; new batch size: D unchanged",
        },
    )


# --- One optimizer for both models ------------------------------------------------------------


@pytest.mark.parametrize("recompile", [False, True], ids=["toggle", "toggle-and-recompile"])
def test_one_optimizer_instance_fails_once_both_models_step(version_split, recompile):
    generator, discriminator = build_generator(), build_discriminator()
    optimizer = keras_gan_optimizer()
    combined = compile_with_one_optimizer(generator, discriminator, optimizer)
    real, noise, _, _ = batch()
    discriminator_before = snapshot(discriminator)
    if recompile:
        discriminator.trainable = True
        discriminator.compile(loss="binary_crossentropy", optimizer=optimizer)
    train_discriminator_phase(discriminator, real, generator.predict(noise, verbose=0))
    assert changed(discriminator_before, discriminator)

    def generator_phase():
        if recompile:
            discriminator.trainable = False
            combined.compile(loss="binary_crossentropy", optimizer=optimizer)
        train_generator_phase(discriminator, combined, noise)

    generator_before = snapshot(generator)
    outcome = outcome_of(
        generator_phase,
        [
            "The optimizer cannot recognize variable",
            "Unknown variable",
            "numpy() is only available when eager execution is enabled",
        ],
    )
    assert not changed(generator_before, generator)
    route = "compiled again before each phase" if recompile else "trainable set, no compile"
    version_split(
        f"one optimizer for D and combined, D trained first ({route}): the generator phase",
        outcome,
        {
            "keras<2.16": "KeyError: The optimizer cannot recognize variable",
            "keras>=2.16,<2.17": "StagingError: The optimizer cannot recognize variable",
            "keras>=2.17,<3": "KeyError: The optimizer cannot recognize variable",
            "keras>=3,<3.7": "ValueError: Unknown variable",
            # Building that ValueError's message reads the variable's value inside the traced
            # step, which raises instead.
            "keras>=3.7,<3.13": "NotImplementedError: numpy() is only available when eager "
            "execution is enabled",
            "keras>=3.13": "ValueError: Unknown variable",
        },
    )


def test_one_optimizer_built_over_both_models_serves_both(observe):
    generator, discriminator = build_generator(), build_discriminator()
    optimizer = keras_gan_optimizer()
    optimizer.build(generator.trainable_weights + discriminator.trainable_weights)
    combined = compile_with_one_optimizer(generator, discriminator, optimizer)
    real, noise, _, _ = batch()
    generator_before, discriminator_before = snapshot(generator), snapshot(discriminator)
    train_discriminator_phase(discriminator, real, generator.predict(noise, verbose=0))
    assert moved(generator_before, discriminator_before, generator, discriminator) == "D"
    generator_before, discriminator_before = snapshot(generator), snapshot(discriminator)
    train_generator_phase(discriminator, combined, noise)
    assert moved(generator_before, discriminator_before, generator, discriminator) == "G"
    # One step counter for both: two steps for D, one for G.
    assert int(optimizer.iterations.numpy()) == 3
    observe("one optimizer built over G's and D's weights first", "each phase updates its model")


# --- The fixes ----------------------------------------------------------------------------------


def count_traces(model):
    """Counts the traces of `model.train_step`: its Python body runs once per trace."""
    traces = []
    train_step = model.train_step

    def counted_train_step(data):
        traces.append(1)
        return train_step(data)

    model.train_step = counted_train_step
    return traces


def train_two_steps(recompile):
    """Two steps of compile_gan's models and the phase functions, compiling again before the
    second step's phases or not. Asserts that each phase moves its model alone; returns the
    train step traces of (D, combined) after each step."""
    generator, discriminator = build_generator(), build_discriminator()
    discriminator_optimizer, combined_optimizer = keras_gan_optimizer(), keras_gan_optimizer()
    combined = compile_gan(generator, discriminator, discriminator_optimizer, combined_optimizer)
    discriminator_traces, combined_traces = count_traces(discriminator), count_traces(combined)
    real, noise, _, _ = batch()
    traces = []
    for step in range(2):
        if recompile and step:  # compile_gan compiled both before the first step.
            discriminator.trainable = True
            discriminator.compile(
                loss="binary_crossentropy", optimizer=discriminator_optimizer, metrics=["accuracy"]
            )
        generator_before, discriminator_before = snapshot(generator), snapshot(discriminator)
        loss, accuracy = train_discriminator_phase(
            discriminator, real, generator.predict(noise, verbose=0)
        )
        assert np.isfinite(loss) and 0 <= accuracy <= 1
        assert moved(generator_before, discriminator_before, generator, discriminator) == "D"

        if recompile and step:
            discriminator.trainable = False
            combined.compile(loss="binary_crossentropy", optimizer=combined_optimizer)
        generator_before, discriminator_before = snapshot(generator), snapshot(discriminator)
        assert np.isfinite(train_generator_phase(discriminator, combined, noise))
        assert moved(generator_before, discriminator_before, generator, discriminator) == "G"
        traces.append((len(discriminator_traces), len(combined_traces)))
    return traces


def test_compile_gan_phases_update_each_model_only_in_its_phase_and_trace_once(observe):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traces = train_two_steps(recompile=False)
    assert not [warning for warning in caught if NO_TRAINABLE_WEIGHTS in str(warning.message)]
    # Each model's train step traced in the first step, and not again in the second.
    assert traces[0] == traces[1] and min(traces[0]) >= 1, traces
    observe(
        "compile_gan, trainable set before each phase, no compile",
        "each phase updates only its model; each train step traced once",
    )


def test_compiling_again_before_each_phase_works_but_traces_every_phase(observe):
    traces = train_two_steps(recompile=True)
    # Compiled again, both models' train steps trace again in the second step.
    assert traces[1][0] > traces[0][0] and traces[1][1] > traces[0][1], traces
    observe(
        "trainable set and compiled again before each phase",
        "each phase updates only its model; train steps traced again every phase",
    )


def test_phase_losses_and_accuracies_are_each_batchs_own_as_keras_gan_prints_them(observe):
    real, noise, _, _ = batch()
    generator, discriminator = build_generator(), constant_discriminator()
    compile_gan(generator, discriminator, discriminator_optimizer=keras.optimizers.Adam(0.0))
    fake = generator.predict(noise, verbose=0)
    loss, accuracy = train_discriminator_phase(discriminator, real, fake)
    assert accuracy == 0.5
    assert loss == pytest.approx((REAL_LOSS + FAKE_LOSS) / 2, abs=1e-5)

    generator, discriminator = build_generator(), constant_discriminator()
    trainer = GanTrainer(
        generator, discriminator, discriminator_optimizer=keras.optimizers.Adam(0.0)
    )
    trainer_loss, trainer_accuracy = trainer.discriminator_step(real, noise)
    assert trainer_accuracy == 0.5
    assert trainer_loss == pytest.approx(loss, abs=1e-5)
    observe(
        "D phase loss and accuracy (phase functions, GanTrainer)",
        "mean of the real and the fake batch's own",
    )


def test_gan_trainer_takes_keras_gan_models_and_updates_each_only_in_its_phase(observe):
    generator, discriminator = build_generator(), build_discriminator()
    keras_gan_pattern(generator, discriminator)  # Leaves D.trainable False.
    trainer = GanTrainer(generator, discriminator, keras_gan_optimizer(), keras.optimizers.SGD())
    assert discriminator.trainable
    real, noise, _, _ = batch()
    for _ in range(3):
        generator_before, discriminator_before = snapshot(generator), snapshot(discriminator)
        loss, accuracy = trainer.discriminator_step(real, noise)
        assert np.isfinite(loss) and 0 <= accuracy <= 1
        assert moved(generator_before, discriminator_before, generator, discriminator) == "D"

        generator_before, discriminator_before = snapshot(generator), snapshot(discriminator)
        assert np.isfinite(trainer.generator_step(noise))
        assert moved(generator_before, discriminator_before, generator, discriminator) == "G"
    # Setting trainable afterwards changes nothing: the variable lists were captured.
    discriminator.trainable = False
    discriminator_before = snapshot(discriminator)
    trainer.discriminator_step(real, noise)
    assert changed(discriminator_before, discriminator)
    observe("GanTrainer (explicit variable lists)", "each phase updates only its model")


def test_bad_arguments_raise_value_error_naming_them():
    generator, discriminator = build_generator(), build_discriminator()
    weightless = keras.Sequential([keras.Input((2,)), keras.layers.Activation("sigmoid")])
    with pytest.raises(ValueError, match=r"discriminator has no trainable weights"):
        GanTrainer(generator, weightless)
    optimizer = keras_gan_optimizer()
    with pytest.raises(ValueError, match=r"and discriminator_optimizer must be two optimizer"):
        GanTrainer(generator, discriminator, optimizer, optimizer)
    with pytest.raises(ValueError, match=r"and combined_optimizer must be two optimizer"):
        compile_gan(generator, discriminator, optimizer, optimizer)
    with pytest.raises(ValueError, match=r"generator_optimizer must be None or an optimizer"):
        GanTrainer(generator, discriminator, generator_optimizer="adam")
    with pytest.raises(ValueError, match=r"generator must be a keras.Model, got None"):
        GanTrainer(None, build_discriminator())
    with pytest.raises(ValueError, match=r"discriminator must be a keras.Model, got 'D'"):
        keras_gan_pattern(generator, "D")
    with pytest.raises(ValueError, match=r"combined must be a keras.Model, got 0"):
        train_generator_phase(discriminator, 0, np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"fake must be an array with a batch axis, got \[\]"):
        train_discriminator_phase(discriminator, np.ones((2, 2)), [])


def test_demo_runs(demo_output):
    printed = demo_output("gan_trainable_toggle")
    assert "compile_gan step 1: [D loss" in printed
    assert "GanTrainer step 1: [D loss" in printed
