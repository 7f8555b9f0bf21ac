"""ONNX converters of the models that hold layers: Sequential, functional models and their
merge layers, and the library's own Model subclasses whose inference output is a fixed
composition of their networks.

    Sequential           layer_n(... layer_1(x))
    Model(inputs, outputs)  its recorded layer calls in order (several inputs and outputs,
                         shared layers, nested models); Concatenate, Add, Subtract, Multiply,
                         Average
    Recompute(block)     block(x) (recomputation only changes training memory)
    Autoencoder          decoder(encoder(x))
    VAE                  σ(decoder(z_mean(encoder(x)))) ("bce"; the decoder's output for "mse"):
                         the reconstruction from z = μ, what `predict` gives
    GAN                  discriminator(x), its `predict`; export `gan.generator` (a Sequential)
                         to get the image maker, with a sample of codes z
    Reinforce            policy(x), the action logits
    DQN                  q_net(x), the Q-values

An Autoencoder's or VAE's `encoder` and `decoder` are Sequential models, so each can also be
exported on its own. Classes are named by their dotted path, so nothing here imports the
generative or RL packages.
"""

from __future__ import annotations

from .onnx_graph import UnsupportedLayer, Value, converter, sample_shape, unsupported_message


def _chain(g, x: Value, *parts) -> Value:
    """Convert (attribute, layer) pairs one after the other."""
    for key, layer in parts:
        x = g.convert(layer, x, key)
    return x


@converter("splitgrad.model.Sequential")
def sequential(g, model, x: Value) -> Value:
    return _chain(g, x, *((la.name, la) for la in model.layers))


@converter("splitgrad.layers.recompute.Recompute")
def recompute(g, layer, x: Value) -> Value:
    return g.convert(layer.block, x, "block")


@converter("splitgrad.generative.autoencoder.Autoencoder")
def autoencoder(g, model, x: Value) -> Value:
    return _chain(g, x, ("encoder", model.encoder), ("decoder", model.decoder))


@converter("splitgrad.generative.vae.VAE")
def vae(g, model, x: Value) -> Value:
    parts = [("encoder", model.encoder), ("z_mean", model.z_mean), ("decoder", model.decoder)]
    y = _chain(g, x, *parts)
    if model.reconstruction != "bce":
        return y
    return Value(g.op("Sigmoid", [y.name], "reconstruction"), y.shape)


@converter("splitgrad.generative.gan.GAN")
def gan(g, model, x: Value) -> Value:
    return g.convert(model.discriminator, x, "discriminator")


@converter("splitgrad.rl.reinforce.Reinforce")
def reinforce(g, agent, x: Value) -> Value:
    return g.convert(agent.policy, x, "policy")


@converter("splitgrad.rl.dqn.DQN")
def dqn(g, agent, x: Value) -> Value:
    return g.convert(agent.q_net, x, "q_net")


# ----- functional models -------------------------------------------------------------------
@converter("splitgrad.layers.input_layer.InputLayer")
def input_layer(g, layer, x: Value) -> Value:
    return x


@converter("splitgrad.model.Model")
def functional(g, model, x):
    """`Model(inputs, outputs)`: its recorded layer calls in order, each on the values its
    symbolic arguments stand for; a layer called twice is converted at each call."""
    recorded = _functional_graph(g, model)
    xs = x if isinstance(x, list) else [x]
    if len(xs) != len(recorded.inputs):
        raise UnsupportedLayer(
            unsupported_message(
                model, g.where(), f"it takes {len(recorded.inputs)} inputs, it was given {len(xs)}"
            )
        )
    values = {id(t): v for t, v in zip(recorded.inputs, xs)}
    for node in recorded.nodes:
        leaves = node.x if isinstance(node.x, (list, tuple)) else [node.x]
        if node.args or node.kwargs or any(id(t) not in values for t in leaves):
            raise UnsupportedLayer(
                unsupported_message(
                    node.layer,
                    g.where(),
                    "it is called with arguments other than the model's tensors "
                    "(initial_state=, constants); the exporter follows tensor-only calls",
                )
            )
        args = [values[id(t)] for t in leaves]
        out = g.convert(node.layer, args if isinstance(node.x, (list, tuple)) else args[0])
        for t, v in zip(node.outputs, out if isinstance(out, list) else [out]):
            values[id(t)] = v
    ys = [values[id(t)] for t in recorded.outputs]
    return ys[0] if len(ys) == 1 else ys


def _functional_graph(g, model):
    # Model keeps its recorded graph as `_graph` (functional_model.FunctionalGraph: inputs,
    # nodes in a topological order, outputs). A Model made without one has only Model.call,
    # which raises: there is nothing to export.
    recorded = getattr(model, "_graph", None)
    if recorded is None:
        raise UnsupportedLayer(
            unsupported_message(
                model,
                g.where(),
                "it is a Model with neither a graph of layers (Model(inputs, outputs)) nor a "
                "call() of its own",
            )
        )
    return recorded


@converter("splitgrad.layers.merge.Concatenate")
def concatenate(g, layer, xs) -> Value:
    shape = sample_shape(layer, xs)
    return Value(g.op("Concat", [x.name for x in xs], axis=layer.axis), shape)


@converter(
    "splitgrad.layers.merge.Add",
    "splitgrad.layers.merge.Subtract",
    "splitgrad.layers.merge.Multiply",
    "splitgrad.layers.merge.Average",
)
def merge(g, layer, xs) -> Value:
    """x_1 ∘ x_2 ∘ ... folded left to right, as splitgrad folds them (Average: the sum · 1/n)."""
    shape = sample_shape(layer, xs)
    kind = next(c.__name__ for c in type(layer).__mro__ if c.__module__.endswith(".merge"))
    op_type = {"Add": "Add", "Average": "Add", "Subtract": "Sub", "Multiply": "Mul"}[kind]
    out = xs[0].name
    for x in xs[1:]:
        out = g.op(op_type, [out, x.name])
    if kind == "Average":
        out = g.op("Mul", [out, g.const(1.0 / len(xs), "one_over_n")], "average")
    return Value(out, shape)
