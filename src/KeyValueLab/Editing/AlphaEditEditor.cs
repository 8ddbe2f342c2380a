using System.Text.Json.Nodes;
using KeyValueLab.Memory;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Editing;

/// <summary>AlphaEdit's own hyperparameters, beside the ones it shares with MEMIT.</summary>
/// <param name="NullspaceThreshold">Keep the directions of C whose singular value is below this (AlphaEdit: 2e-2).</param>
/// <param name="L2">The ridge term of the update's solve (AlphaEdit: 10).</param>
public sealed record NullSpaceSettings(double NullspaceThreshold = 2e-2, double L2 = 10)
{
    /// <summary>The pair as <paramref name="hp"/> sets it (read with the rest of the file), AlphaEdit's defaults where it does not.</summary>
    public static NullSpaceSettings From(LocateEditHyperparameters hp, string source)
    {
        var defaults = new NullSpaceSettings();
        var settings = new NullSpaceSettings(hp.NullspaceThreshold ?? defaults.NullspaceThreshold, hp.L2 ?? defaults.L2);
        if (!(settings.NullspaceThreshold > 0) || !double.IsFinite(settings.NullspaceThreshold)) throw new InputException(source, "nullspace_threshold must be positive");
        if (!(settings.L2 >= 0) || !double.IsFinite(settings.L2)) throw new InputException(source, "l2 must not be negative");
        return settings;
    }
}

/// <summary>
/// AlphaEdit (Fang et al., ICLR 2025; jianghoucheng/AlphaEdit AlphaEdit_main.py) on the value matrices of a layer
/// range: MEMIT's targets and keys (<see cref="MultiLayerEditorBase"/>), but each layer's update is projected onto the
/// null space of the preserved knowledge, Δᵀ = solve(P(K Kᵀ + K_pK_pᵀ) + L2·I, P K Rᵀ), with P from the value inputs'
/// second moment (<see cref="NullSpaceProjector"/>) and K_p the keys of every earlier batch, recomputed on the
/// edited model after each batch and added. MEMIT's λ (mom2_update_weight) is not used.
/// </summary>
public sealed class AlphaEditEditor(LocateEditHyperparameters hp, NullSpaceSettings nullSpace, IReadOnlyList<int> layers, SecondMoments statistics)
    : NullSpaceEditorBase(hp, nullSpace, new EditScope(EditSide.Values, layers), statistics)
{
    protected override HookPoint InputPoint(FfnMemory memory, int layer) => HookPoint.Linear(memory.ValuesName(layer), memory.ValueModule(layer));

    protected override void UpdateLayer(CausalLM model, ITokenizer tokenizer, IReadOnlyList<EditPrompt> own, FfnMemory memory, int layer, Tensor keys, Tensor residual)
    {
        using var scope = NewDisposeScope();
        var delta = Projector(layer).Delta(keys, residual, NullSpace.L2);                             // [d, d_ff]
        using (no_grad()) memory.Values(layer).PlusInPlace(delta);
    }
}

/// <summary>What AlphaEdit and Key-AlphaEdit share: one <see cref="NullSpaceProjector"/> per layer, built in Prepare, and K_p kept across batches.</summary>
public abstract class NullSpaceEditorBase : MultiLayerEditorBase, IEditHistory, IDisposable
{
    private readonly Dictionary<int, NullSpaceProjector> _projectors = [];

    protected NullSpaceEditorBase(LocateEditHyperparameters hp, NullSpaceSettings nullSpace, EditScope scope, SecondMoments statistics)
        : base(hp, scope, statistics) => NullSpace = nullSpace;

    public NullSpaceSettings NullSpace { get; }

    /// <summary>P and K_p at <paramref name="layer"/> (after <see cref="Prepare"/>).</summary>
    public NullSpaceProjector Projector(int layer) =>
        _projectors.TryGetValue(layer, out var p) ? p : throw new InvalidOperationException("call Prepare first");

    public long HistoryCount => _projectors.Count == 0 ? 0 : _projectors.Values.First().HistoryCount;

    public void ResetHistory()
    {
        foreach (var p in _projectors.Values) p.ResetHistory();
    }

    public override IReadOnlyList<string> Prepare(CausalLM model, ITokenizer tokenizer)
    {
        var log = base.Prepare(model, tokenizer).ToList();
        foreach (var p in _projectors.Values) p.Dispose();
        _projectors.Clear();
        foreach (int layer in Scope.Layers)
        {
            var projector = new NullSpaceProjector(Moment(layer), NullSpace.NullspaceThreshold);
            _projectors[layer] = projector;
            log.Add($"null space L{layer}: kept {projector.Kept} of {projector.Dim} directions (singular value < {NullSpace.NullspaceThreshold:G3})");
        }
        return log;
    }

    protected override void AfterBatch(CausalLM model, ITokenizer tokenizer, IReadOnlyList<EditRequest> requests, FfnMemory memory)
    {
        foreach (int layer in Scope.Layers)
        {
            using var scope = NewDisposeScope();
            Projector(layer).AddHistory(Keys(model, tokenizer, requests, InputPoint(memory, layer)));
        }
    }

    protected override void Describe(JsonObject json)
    {
        json.Remove("nullspace_threshold");  // re-added last, where params.json has always had them
        json.Remove("l2");
        json["nullspace_threshold"] = NullSpace.NullspaceThreshold;
        json["l2"] = NullSpace.L2;
        json.Remove("mom2_update_weight");
    }

    public new void Dispose()
    {
        foreach (var p in _projectors.Values) p.Dispose();
        _projectors.Clear();
        base.Dispose();
    }
}
