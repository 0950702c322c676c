"""Tests for recipes/gan_trainable_toggle.py: which model each phase updates, weight by weight."""

import warnings

import numpy as np
import pytest
from tensorflow import keras

from conftest import outcome_of
from recipes import gan_trainable_toggle
from recipes.gan_trainable_toggle import (
    GanTrainer,
    build_combined,
    build_discriminator,
    build_generator,
    keras_gan_pattern,
    train_discriminator_toggled,
    train_generator_toggled,
)

BATCH = 16


def batch(seed=1):
    """Real samples, noise, and the labels of both phases."""
    random = np.random.default_rng(seed)
    real = random.normal(loc=2.0, size=(BATCH, 2)).astype("float32")
    noise = random.normal(size=(BATCH, 2)).astype("float32")
    return real, noise, np.ones((BATCH, 1), "float32"), np.zeros((BATCH, 1), "float32")


def snapshot(model):
    return [weight.copy() for weight in model.get_weights()]


def changed(before, model):
    """True when any weight of `model` differs from `before` in any bit."""
    after = model.get_weights()
    assert len(after) == len(before) > 0
    return any(not np.array_equal(old, new) for old, new in zip(before, after, strict=True))


def test_keras_gan_pattern_discriminator_training_depends_on_the_keras_version(version_split):
    generator, discriminator = build_generator(), build_discriminator()
    keras_gan_pattern(generator, discriminator)
    real, noise, ones, zeros = batch()
    fake = generator.predict(noise, verbose=0)
    before = snapshot(discriminator)
    losses = []

    def train_discriminator():
        losses.append(float(discriminator.train_on_batch(real, ones)))
        losses.append(float(discriminator.train_on_batch(fake, zeros)))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Keras 3.6 and 3.7: compiling `combined` unset D's loss tracker (keras#20474).
        outcome = outcome_of(train_discriminator, ["'NoneType' object has no attribute"])
    if outcome == "works":
        # A loss comes back either way, so nothing in the training loop looks wrong.
        assert len(losses) == 2 and all(np.isfinite(losses))
        messages = [str(warning.message) for warning in caught]
        warned = any("does not have any trainable weights" in message for message in messages)
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


def test_keras_gan_pattern_combined_updates_the_generator_only(observe):
    generator, discriminator = build_generator(), build_discriminator()
    combined = keras_gan_pattern(generator, discriminator)
    _, noise, ones, _ = batch()
    generator_before, discriminator_before = snapshot(generator), snapshot(discriminator)
    for _ in range(2):
        combined.train_on_batch(noise, ones)
    assert changed(generator_before, generator)
    assert not changed(discriminator_before, discriminator)
    observe("Keras-GAN pattern: combined.train_on_batch", "updates G, D bit-identical")


def test_toggle_and_recompile_updates_each_model_only_in_its_phase(observe):
    generator, discriminator = build_generator(), build_discriminator()
    combined = build_combined(generator, discriminator)
    discriminator_optimizer = keras.optimizers.Adam(1e-2)
    generator_optimizer = keras.optimizers.Adam(1e-2)
    real, noise, ones, zeros = batch()
    samples = np.concatenate([real, generator.predict(noise, verbose=0)])
    labels = np.concatenate([ones, zeros])
    for _ in range(3):
        generator_before, discriminator_before = snapshot(generator), snapshot(discriminator)
        assert np.isfinite(
            float(
                train_discriminator_toggled(discriminator, discriminator_optimizer, samples, labels)
            )
        )
        assert changed(discriminator_before, discriminator)
        assert not changed(generator_before, generator)

        generator_before, discriminator_before = snapshot(generator), snapshot(discriminator)
        assert np.isfinite(
            float(
                train_generator_toggled(discriminator, combined, generator_optimizer, noise, ones)
            )
        )
        assert changed(generator_before, generator)
        assert not changed(discriminator_before, discriminator)
    # Recompiling with the same optimizer instance keeps its state: 3 steps each.
    assert int(discriminator_optimizer.iterations.numpy()) == 3
    assert int(generator_optimizer.iterations.numpy()) == 3
    observe("toggle trainable and recompile each phase", "each phase updates only its model")


def test_gan_trainer_updates_each_model_only_in_its_phase(observe):
    generator, discriminator = build_generator(), build_discriminator()
    trainer = GanTrainer(generator, discriminator, learning_rate=1e-2)
    real, noise, _, _ = batch()
    discriminator_losses = []
    for _ in range(3):
        generator_before, discriminator_before = snapshot(generator), snapshot(discriminator)
        discriminator_losses.append(trainer.discriminator_step(real, noise))
        assert changed(discriminator_before, discriminator)
        assert not changed(generator_before, generator)

        generator_before, discriminator_before = snapshot(generator), snapshot(discriminator)
        assert np.isfinite(trainer.generator_step(noise))
        assert changed(generator_before, generator)
        assert not changed(discriminator_before, discriminator)
    assert all(np.isfinite(discriminator_losses))
    # Setting trainable afterwards changes nothing: the variable lists were captured.
    discriminator.trainable = False
    discriminator_before = snapshot(discriminator)
    trainer.discriminator_step(real, noise)
    assert changed(discriminator_before, discriminator)
    observe("GanTrainer (explicit variable lists)", "each phase updates only its model")


def test_gan_trainer_refuses_a_frozen_model_and_bad_arguments():
    generator, discriminator = build_generator(), build_discriminator()
    discriminator.trainable = False
    with pytest.raises(ValueError, match=r"discriminator has no trainable weights"):
        GanTrainer(generator, discriminator)
    with pytest.raises(ValueError, match=r"generator must be a keras.Model, got None"):
        GanTrainer(None, build_discriminator())
    with pytest.raises(ValueError, match=r"discriminator must be a keras.Model, got 'D'"):
        keras_gan_pattern(generator, "D")
    with pytest.raises(ValueError, match=r"combined must be a keras.Model, got 0"):
        train_generator_toggled(build_discriminator(), 0, keras.optimizers.Adam(), None, None)
    with pytest.raises(ValueError, match=r"discriminator must be a keras.Model, got \[\]"):
        train_discriminator_toggled([], keras.optimizers.Adam(), None, None)


def test_demo_runs(capsys):
    gan_trainable_toggle.demo()
    assert "GanTrainer step 2" in capsys.readouterr().out
