"""Tests for recipes/distributed_custom_loop.py: two replicas train as one device does.

Logical CPUs can only be added before TensorFlow initializes its devices, and this process
runs other tests' TensorFlow ops, so the distributed checks run in child processes
(tests/distributed_custom_loop_child.py), started together once per module: one child with
two logical CPUs runs every MirroredStrategy check, and two worker children on localhost
run MultiWorkerMirroredStrategy. The tests assert on the JSON they print.
"""

import json
import socket
import subprocess
import time

import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from recipes import distributed_custom_loop as recipe
from tests.child_process import finish, start_python

# `python tests/distributed_custom_loop_child.py MODE`, run as code so the child can fork from
# the suite's server (tests/child_process.py) instead of importing TensorFlow again.
RUN_CHILD = (
    "import runpy; runpy.run_path('tests/distributed_custom_loop_child.py', run_name='__main__')"
)
# Two replicas add their halves of a batch separately and the all-reduce adds the two sums: a
# different float32 summation order than one device's, so results differ by rounding. Weights
# of size ~1 after 8 SGD steps differ by a few 1e-8 (float32 epsilon is 1.2e-7); 1e-6 leaves
# room for that and is still far below the 1e-2 and larger differences the pitfalls make.
TOLERANCE = 1e-6
# A hung child (a worker waiting for a peer that died) must not stall the suite. The three
# children need about 10 s of CPU together; on a machine shared by many processes they took
# up to 65 s of wall time, and a loaded CI run has run each stack 4x slower than alone, so
# the bound leaves room for that (only a hang ever waits this long).
CHILD_TIMEOUT_SECONDS = 600


def last_json_line(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for open_socket in sockets:
        open_socket.bind(("localhost", 0))
    ports = [open_socket.getsockname()[1] for open_socket in sockets]
    for open_socket in sockets:
        open_socket.close()
    return ports


def start_child(mode, **environment):
    """`python tests/distributed_custom_loop_child.py mode`, with `environment` set."""
    return start_python(RUN_CHILD, mode, environment=environment)


def run_children():
    """The MirroredStrategy child and two MultiWorkerMirroredStrategy workers on localhost,
    started together, as {name: (outcome, result)}: ("works", the child's JSON),
    ("timeout", "") or ("exit N", the end of its stderr)."""
    workers = [f"localhost:{port}" for port in free_ports(2)]
    children = {"mirrored": start_child("mirrored")}
    for index in range(len(workers)):
        children[f"worker {index}"] = start_child(
            "worker", TF_CONFIG=recipe.tf_config(workers, index)
        )
    deadline = time.monotonic() + CHILD_TIMEOUT_SECONDS
    outcomes = {}
    for name, child in children.items():
        try:
            completed = child.finish(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            outcomes[name] = ("timeout", "")
            continue
        if completed.returncode != 0:
            outcomes[name] = (f"exit {completed.returncode}", completed.stderr[-3000:])
        else:
            outcomes[name] = ("works", last_json_line(completed.stdout))
    return outcomes


# The children start when the tests are collected and run beside them (conftest).
START_EARLY = {"children": run_children}


@pytest.fixture(scope="module")
def children():
    return finish(run_children)


@pytest.fixture(scope="module")
def mirrored(children):
    """Every MirroredStrategy check, run once in a child with two logical CPUs."""
    outcome, result = children["mirrored"]
    assert outcome == "works", result
    return result


# --- Devices ----------------------------------------------------------------------------------


@pytest.fixture
def initialized_tensorflow():
    """This process's TensorFlow with its devices initialized, as after any first op.

    Importing TensorFlow (conftest) does not initialize the devices: before the first op,
    `use_logical_cpus` here would split this test process's CPU for every later test.
    """
    return tf.config.list_logical_devices("CPU")


def test_use_logical_cpus_splits_the_cpu_in_a_fresh_process_only(
    mirrored, initialized_tensorflow, observe
):
    assert mirrored["devices"] == ["/device:CPU:0", "/device:CPU:1"]
    assert mirrored["created"] is True and mirrored["replicas"] == 2
    # Once TensorFlow has initialized its devices, a new split is refused: the two stay.
    assert mirrored["second_call"] == [["/device:CPU:0", "/device:CPU:1"], False]
    # In this process TensorFlow is initialized: one CPU, and no change.
    assert [device.name for device in initialized_tensorflow] == ["/device:CPU:0"]
    assert recipe.use_logical_cpus(2) == (["/device:CPU:0"], False)
    observe("set_logical_device_configuration after TensorFlow initialized", "refused")


def test_demo_falls_back_to_the_existing_devices_and_says_so(initialized_tensorflow, capsys):
    recipe.demo()
    printed = capsys.readouterr().out
    assert "already initialized" in printed and "1 replicas" in printed
    assert "epoch 2: mean loss" in printed


# --- The loss ---------------------------------------------------------------------------------


def test_replica_loss_divides_by_the_global_batch_and_the_replica_count():
    per_example_loss = tf.constant([1.0, 2.0, 3.0, 6.0])
    regularization = [tf.constant(0.5), tf.constant(0.25)]
    # One replica (this process): the replica's share is the whole mean plus the regularizer.
    loss = recipe.replica_loss(per_example_loss, 4, regularization)
    assert float(loss) == pytest.approx(3.0 + 0.75)
    # The same four examples as one replica's half of a global batch of 8: half the data loss.
    assert float(recipe.replica_loss(per_example_loss, np.int64(8))) == pytest.approx(1.5)


def test_replica_loss_gives_the_single_device_gradients(mirrored, observe):
    assert mirrored["recipe_gradient_difference"] <= TOLERANCE
    observe("replica_loss gradients summed over 2 replicas", "single-device gradients (1e-6)")


def test_single_device_loss_in_strategy_run_doubles_the_gradients_and_the_sgd_step(
    mirrored, observe
):
    low, high = mirrored["pitfall_gradient_ratio"]
    assert 2 - 1e-5 <= low <= high <= 2 + 1e-5
    # One SGD step through make_distributed_train_step: twice the single-device update.
    assert mirrored["pitfall_step_norm_ratio"] == pytest.approx(2.0, abs=1e-5)
    assert mirrored["pitfall_step_minus_twice_single"] <= TOLERANCE
    assert mirrored["recipe_step_difference"] <= TOLERANCE
    observe("single-device loss inside strategy.run, 2 replicas", "gradients and SGD step x2")


def test_unscaled_regularization_loss_counts_the_regularizer_once_per_replica(mirrored, observe):
    # The excess over the right gradients is one more whole regularization gradient.
    assert mirrored["unscaled_regularization_excess_difference"] <= TOLERANCE
    # ... which is far from nothing, so the check above cannot pass by accident.
    assert mirrored["regularization_gradient_size"] > 1e-3
    observe("model.losses without scale_regularization_loss, 2 replicas", "regularizer x2")


# --- Equivalence -----------------------------------------------------------------------------


def custom_loop_outcome(result):
    if result["steps"] != 8:
        return f"{result['steps']} steps, not 8"
    if not result["replicas_identical"]:
        return "replicas diverge"
    if result["difference"] == 0:
        return "single-device weights, bitwise"
    if result["difference"] <= TOLERANCE:
        return "single-device weights (1e-6, not bitwise)"
    return f"differs by {result['difference']:.1e}"


@pytest.mark.parametrize("route", ["experimental_distribute_dataset", "from_function"])
def test_two_replicas_train_to_the_single_device_weights(mirrored, route, version_split):
    """The same on every release, a split all the same: the recipe's step all-reduces the
    gradients itself where the optimizer does not (Keras 3.0 to 3.4), and `fit` changes at
    3.5 and 3.8, so each range of the recipe's Versions is checked by the sweep."""
    # Equal within rounding, not bit for bit: the summation order differs (see TOLERANCE).
    agrees = "single-device weights (1e-6, not bitwise)"
    version_split(
        f"custom loop on 2 replicas, {route}",
        custom_loop_outcome(mirrored[route]),
        {
            "keras<3": agrees,
            "keras>=3,<3.5": agrees,
            "keras>=3.5,<3.8": agrees,
            "keras>=3.8": agrees,
        },
    )


def test_distributed_dataset_per_replica_needs_a_divisible_global_batch(mirrored):
    assert "global_batch_size=7" in mirrored["indivisible_batch_error"]


def test_optimizer_sums_the_replicas_gradients_from_keras_3_5(mirrored, version_split):
    """Without the recipe's all-reduce: on Keras 3.0 to 3.4 each replica applies its own
    gradient to its own copy of the weights, and the copies drift apart."""
    observed = (
        "replicas identical" if mirrored["raw_optimizer_replicas_identical"] else "replicas diverge"
    )
    version_split(
        "optimizer.apply_gradients inside strategy.run (2 replicas)",
        observed,
        {
            "keras<3": "replicas identical",
            "keras>=3,<3.5": "replicas diverge",
            "keras>=3.5": "replicas identical",
        },
    )
    sums = observed == "replicas identical"
    assert sums == recipe.OPTIMIZER_SUMS_REPLICA_GRADIENTS


def fit_outcome(result):
    if not result["replicas_identical"]:
        return "replicas diverge"
    if result["minus_twice_single"] <= TOLERANCE:
        return "steps twice as large"
    if result["difference"] <= TOLERANCE:
        return "single-device weights"
    return f"differs by {result['difference']:.1e}"


def test_fit_under_strategy_scope_depends_on_the_keras_version(mirrored, version_split):
    """One SGD step of `fit` under MirroredStrategy against `fit` on one device."""
    observed = fit_outcome(mirrored["fit_one_step"])
    version_split(
        "fit under MirroredStrategy (2 replicas), one SGD step",
        observed,
        {
            "keras<3": "single-device weights",
            "keras>=3,<3.5": "replicas diverge",
            "keras>=3.5,<3.8": "steps twice as large",
            "keras>=3.8": "single-device weights",
        },
    )
    epoch = mirrored["fit_one_epoch"]
    if observed == "single-device weights":
        assert epoch["replicas_identical"] and epoch["difference"] <= TOLERANCE
    else:
        assert epoch["difference"] > 1e-2


# --- Several machines ------------------------------------------------------------------------


def test_two_workers_on_localhost_end_with_identical_single_device_weights(
    children, mirrored, observe
):
    for name in ("worker 0", "worker 1"):
        outcome, result = children[name]
        assert outcome == "works", (name, result)
    first, second = children["worker 0"][1], children["worker 1"][1]
    assert first["replicas"] == second["replicas"] == 2
    assert first["steps"] == second["steps"] == 8
    assert first["weights"] == second["weights"]
    reference = mirrored["single_device_weights"]
    difference = max(
        float(np.max(np.abs(np.subtract(weight, expected))))
        for weight, expected in zip(first["weights"], reference, strict=True)
    )
    assert difference <= TOLERANCE
    observe("2 MultiWorkerMirroredStrategy workers on localhost", "identical, single-device (1e-6)")


def test_tf_config_names_the_cluster_and_this_workers_index():
    config = json.loads(recipe.tf_config(["host-a:2222", "host-b:2222"], np.int64(1)))
    assert config == {
        "cluster": {"worker": ["host-a:2222", "host-b:2222"]},
        "task": {"type": "worker", "index": 1},
    }


# --- Bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, -1, 2.5, True, "2"])
def test_use_logical_cpus_rejects_a_bad_count(count):
    with pytest.raises(ValueError, match=rf"count={count!r}"):
        recipe.use_logical_cpus(count)


@pytest.mark.parametrize("size", [0, -8, 8.0, False])
def test_replica_loss_rejects_a_bad_global_batch_size(size):
    with pytest.raises(ValueError, match=rf"global_batch_size={size!r}"):
        recipe.replica_loss(tf.ones(4), size)


def test_distributed_dataset_rejects_bad_arguments():
    strategy = tf.distribute.get_strategy()
    features, targets = np.ones((8, 4), "float32"), np.ones((8, 1), "float32")
    with pytest.raises(ValueError, match=r"strategy=None"):
        recipe.distributed_dataset(None, features, targets, 8)
    with pytest.raises(ValueError, match=r"global_batch_size=-1"):
        recipe.distributed_dataset(strategy, features, targets, -1)
    with pytest.raises(ValueError, match=r"8 != 7"):
        recipe.distributed_dataset(strategy, features, targets[:7], 8)


def test_make_distributed_train_step_rejects_bad_arguments():
    strategy = tf.distribute.get_strategy()
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(1)])
    optimizer = keras.optimizers.SGD(0.1)
    squared_error = keras.losses.MeanSquaredError(reduction="none")
    good = (strategy, model, squared_error, optimizer, 8)
    for position, bad, fragment in [
        (0, "mirrored", r"strategy='mirrored'"),
        (1, "model", r"model='model'"),
        (2, None, r"per_example_loss_fn=None"),
        (3, "sgd", r"optimizer='sgd'"),
        (4, 0, r"global_batch_size=0"),
    ]:
        arguments = list(good)
        arguments[position] = bad
        with pytest.raises(ValueError, match=fragment):
            recipe.make_distributed_train_step(*arguments)
    with pytest.raises(ValueError, match=r"loss_fn=3"):
        recipe.make_distributed_train_step(*good, loss_fn=3)


@pytest.mark.parametrize(
    ("workers", "task_index", "fragment"),
    [
        ([], 0, r"workers=\[\]"),
        ("localhost:1", 0, r"workers='localhost:1'"),
        (["localhost"], 0, r"'localhost'"),
        (["localhost:port"], 0, r"'localhost:port'"),
        (["a:1", "b:2"], 2, r"task_index=2"),
        (["a:1", "b:2"], -1, r"task_index=-1"),
        (["a:1", "b:2"], True, r"task_index=True"),
    ],
)
def test_tf_config_rejects_bad_workers_and_task_index(workers, task_index, fragment):
    with pytest.raises(ValueError, match=fragment):
        recipe.tf_config(workers, task_index)
