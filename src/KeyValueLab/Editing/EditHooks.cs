using KeyValueLab.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace KeyValueLab.Editing;

/// <summary>
/// A place in the network whose output an edit reads or changes: the output of a linear module (ROME's
/// value-module output, Key-ROME's key-module output) or of a transformer block (MEMIT's residual z).
/// </summary>
public sealed class HookPoint
{
    private readonly Func<Func<Tensor, Tensor, Tensor>, Action> _install;

    private HookPoint(string name, Func<Func<Tensor, Tensor, Tensor>, Action> install) => (Name, _install) = (name, install);

    public string Name { get; }

    /// <summary>The output of <paramref name="module"/>; the hook also sees its input (the real one when the weight is frozen).</summary>
    public static HookPoint Linear(string name, Linear module) => new(name, f =>
    {
        var remover = module.register_forward_hook((_, input, output) => f(FrozenLinear.Input(module, input), output));
        return remover.remove;
    });

    /// <summary>The residual stream after block <paramref name="layer"/>.</summary>
    public static HookPoint BlockOutput(CausalLM model, int layer) => new($"block {layer}", f =>
    {
        var remover = model.Block(layer).register_forward_hook((_, input, _, output) => f(input, output));
        return remover.remove;
    });

    /// <summary>
    /// Installs <paramref name="transform"/> (input, output) → new output until the returned handle is disposed.
    /// </summary>
    public IDisposable Install(Func<Tensor, Tensor, Tensor> transform) => new Remover(_install(transform));

    private sealed class Remover(Action remove) : IDisposable
    {
        private Action? _remove = remove;
        public void Dispose() { _remove?.Invoke(); _remove = null; }
    }
}

/// <summary>
/// Turns off gradients of every model parameter (edits differentiate activations only) except
/// <c>trainable</c>, and restores them. A trainable weight need not be a registered parameter: Phi-3's gate
/// and up halves are views of the fused gate_up_proj (see <see cref="FusedLinear"/>) and get gradients on their own.
/// </summary>
internal sealed class FrozenParameters : IDisposable
{
    private readonly List<(Parameter P, bool Was)> _saved = [];

    public FrozenParameters(nn.Module model, IEnumerable<Parameter>? trainable = null)
    {
        var train = (trainable ?? []).ToList();
        var keep = new HashSet<IntPtr>(train.Select(p => p.Handle));
        var seen = new HashSet<IntPtr>();
        foreach (var (_, p) in model.named_parameters())
        {
            _saved.Add((p, p.requires_grad));
            seen.Add(p.Handle);
            p.requires_grad_(keep.Contains(p.Handle));
        }
        foreach (var p in train.Where(p => seen.Add(p.Handle)))
        {
            _saved.Add((p, p.requires_grad));
            p.requires_grad_(true);
        }
    }

    public void Dispose()
    {
        foreach (var (p, was) in _saved) p.requires_grad_(was);
        _saved.Clear();
    }
}

/// <summary>Reads module inputs or outputs at each prompt's lookup position.</summary>
internal static class LookupActivations
{
    /// <summary>
    /// Runs <paramref name="prompts"/> (right-padded, no targets) and returns, per prompt, the
    /// <paramref name="point"/>'s input (or output) at its lookup position, <c>[N, dim]</c>, detached.
    /// </summary>
    public static Tensor AtLookup(CausalLM model, IReadOnlyList<EditPrompt> prompts, HookPoint point, bool input, int padId)
    {
        using var scope = NewDisposeScope();
        var sequences = prompts.Select(p => (IReadOnlyList<int>)p.PromptIds).ToArray();
        using var batch = Inference.TokenBatch.RightPadded(sequences, padId);
        var rows = tensor(Enumerable.Range(0, prompts.Count).Select(i => (long)i).ToArray());
        var cols = tensor(prompts.Select(p => (long)p.LookupIndex).ToArray());
        Tensor? seen = null;
        using (no_grad())
        using (point.Install((x, y) => { seen?.Dispose(); seen = (input ? x : y).index(rows, cols).detach().clone().DetachFromDisposeScope(); return y; }))
            model.Forward(batch.InputIds, batch.AttentionMask, batch.PositionIds);
        if (seen is null) throw new InvalidOperationException($"the forward pass did not reach {point.Name}");
        using (seen) return seen.clone().MoveToOuterDisposeScope();  // forward's scope would have disposed a tensor made in the hook
    }
}
