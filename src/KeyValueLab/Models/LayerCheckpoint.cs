using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Models;

/// <summary>
/// Gradient checkpointing of one decoder layer (Chen et al. 2016; what QLoRA trains its 4-bit models with, through
/// transformers' <c>gradient_checkpointing_enable()</c>): the forward pass runs the layer without building a graph and keeps
/// only its input; the backward pass runs the layer again with gradients on, from the same random state (so dropout draws
/// the same masks), and back-propagates through that copy, which adds the gradients of the layer's parameters (LoRA
/// adapters, an edited matrix) to their <c>.grad</c> and returns the gradient of the input. A training step then holds the
/// activations of one layer at a time instead of every layer's, for one more forward pass of compute.
/// </summary>
/// <remarks>
/// This is the reentrant variant of <c>torch.utils.checkpoint</c>. A checkpointed layer's input must need a gradient
/// (otherwise autograd would never call the backward pass, and the layer's parameters would get no gradient), so a layer
/// whose input needs none (the output of a frozen embedding or of frozen layers) is not checkpointed (see <see cref="Apply"/>).
/// </remarks>
internal sealed class LayerCheckpoint : autograd.SingleTensorFunction<LayerCheckpoint>
{
    public override string Name => nameof(LayerCheckpoint);

    /// <summary>
    /// <paramref name="layer"/>(<paramref name="x"/>), checkpointed when a gradient is being recorded and flows into
    /// <paramref name="x"/>; <paramref name="generators"/> are restored for the recomputation (the global one always is). A
    /// layer whose input needs no gradient runs plainly: below the first trainable layer (an FT edit's layers under the edited
    /// one) it records no graph at all, and the first trainable layer itself (the edited one, or a LoRA model's layer 0) keeps
    /// its own activations, one layer's worth, instead of being run a second time.
    /// </summary>
    public static Tensor Apply(Func<Tensor, Tensor> layer, Tensor x, IReadOnlyList<Generator> generators) =>
        !is_grad_enabled() || !x.requires_grad ? layer(x) : apply(x, layer, generators);

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (x, layer, generators) = ((Tensor)vars[0], (Func<Tensor, Tensor>)vars[1], (IReadOnlyList<Generator>)vars[2]);
        ctx.save_for_backward([x]);
        ctx.save_data("layer", layer);
        ctx.save_data("generators", generators);
        ctx.save_data("states", States(generators));
        using var scope = NewDisposeScope();
        return layer(x).MoveToOuterDisposeScope();  // no graph: autograd is off inside a Function's forward
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        var x = ctx.get_saved_variables()[0];
        var layer = (Func<Tensor, Tensor>)ctx.get_data("layer");
        var generators = (IReadOnlyList<Generator>)ctx.get_data("generators");
        var saved = (Tensor[])ctx.get_data("states");
        using var scope = NewDisposeScope();
        var now = States(generators);
        Tensor input, y;
        try
        {
            Restore(generators, saved);
            using (enable_grad())
            {
                input = x.detach().requires_grad_(true);
                y = layer(input);
            }
        }
        finally
        {
            Restore(generators, now);
            foreach (var t in now.Concat(saved)) t.Dispose();  // so one backward pass per forward pass, as autograd's default
        }
        autograd.backward([y], [gradOutput]);  // reentrant: the layer's parameters get their gradients here
        return [input.grad!.MoveToOuterDisposeScope(), null!, null!];
    }

    private static Tensor[] States(IReadOnlyList<Generator> generators) =>
        [.. new[] { Generator.Default }.Concat(generators).Select(g => g.get_state().DetachFromDisposeScope())];

    private static void Restore(IReadOnlyList<Generator> generators, Tensor[] states)
    {
        var all = new[] { Generator.Default }.Concat(generators).ToList();
        for (int i = 0; i < all.Count; i++) all[i].set_state(states[i]);
    }
}
