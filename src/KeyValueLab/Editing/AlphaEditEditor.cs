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
/// <param name="KeptFraction">Instead of the absolute threshold: keep this share of C's directions, those of smallest
/// eigenvalue (<c>nullspace_kept_fraction</c>; 2e-2 keeps about 0.7 on Llama-3-8B, SPEC §7).</param>
/// <param name="L2Relative">Instead of the absolute L2: L2 = this × k × the cut (the largest kept eigenvalue, or the
/// threshold), per layer (<c>l2_relative</c>). k × cut bounds tr(ÛᵀCÛ) = E‖Ûᵀx‖², the energy of a statistics input in the
/// kept subspace that the ridge competes with; Llama-3-8B's published pair is 10 / (0.7 × 14,336 × 2e-2) ≈ 0.05.</param>
public sealed record NullSpaceSettings(double NullspaceThreshold = 2e-2, double L2 = 10, double? KeptFraction = null, double? L2Relative = null)
{
    /// <summary>The settings as <paramref name="hp"/> sets them (read with the rest of the file), AlphaEdit's defaults where it does not.</summary>
    public static NullSpaceSettings From(LocateEditHyperparameters hp, string source)
    {
        if (hp.NullspaceThreshold is not null && hp.NullspaceKeptFraction is not null)
            throw new InputException(source, "nullspace_threshold and nullspace_kept_fraction both set; keep one");
        if (hp.L2 is not null && hp.L2Relative is not null) throw new InputException(source, "l2 and l2_relative both set; keep one");
        var defaults = new NullSpaceSettings();
        var settings = new NullSpaceSettings(hp.NullspaceThreshold ?? defaults.NullspaceThreshold, hp.L2 ?? defaults.L2, hp.NullspaceKeptFraction, hp.L2Relative);
        if (!(settings.NullspaceThreshold > 0) || !double.IsFinite(settings.NullspaceThreshold)) throw new InputException(source, "nullspace_threshold must be positive");
        if (!(settings.L2 >= 0) || !double.IsFinite(settings.L2)) throw new InputException(source, "l2 must not be negative");
        if (settings.KeptFraction is { } f && !(f > 0 && f <= 1)) throw new InputException(source, "nullspace_kept_fraction must be in (0, 1]");
        if (settings.L2Relative is { } r && !(r >= 0 && double.IsFinite(r))) throw new InputException(source, "l2_relative must not be negative");
        return settings;
    }

    /// <summary>P for second moment <paramref name="moment"/>: the absolute threshold, or the kept fraction.</summary>
    public NullSpaceProjector Projector(Tensor moment) =>
        KeptFraction is { } f ? NullSpaceProjector.KeepingFraction(moment, f) : new NullSpaceProjector(moment, NullspaceThreshold);

    /// <summary>The ridge at a layer whose projector is <paramref name="projector"/>: L2, or L2Relative × k × cut.</summary>
    public double L2At(NullSpaceProjector projector) => L2Relative is { } r
        ? r * projector.Kept * (projector.Cut ?? throw new InvalidOperationException("l2_relative needs a projector built from a second moment"))
        : L2;

    /// <summary>What the log says about P at a layer (with the published absolute pair, the line it has always been).</summary>
    public string Describe(int layer, NullSpaceProjector p) =>
        $"null space L{layer}: kept {p.Kept} of {p.Dim} directions ("
        + (KeptFraction is { } f ? $"fraction {f:G3}, largest kept eigenvalue {p.Cut:G3}" : $"singular value < {NullspaceThreshold:G3}") + ")"
        + (KeptFraction is null && L2Relative is null ? "" : $", tr(ÛᵀCÛ) {p.KeptTrace:G3}, L2 {L2At(p):G4}");

    /// <summary>The settings in effect, for params.json: the absolute pair as it has always been written, or the relative keys that replace them.</summary>
    public void WriteTo(JsonObject json)
    {
        foreach (string name in (string[])["nullspace_threshold", "nullspace_kept_fraction", "l2", "l2_relative"]) json.Remove(name);
        if (KeptFraction is { } f) json["nullspace_kept_fraction"] = f;
        else json["nullspace_threshold"] = NullspaceThreshold;
        if (L2Relative is { } r) json["l2_relative"] = r;
        else json["l2"] = L2;
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
        var delta = Projector(layer).Delta(keys, residual, NullSpace.L2At(Projector(layer)));         // [d, d_ff]
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
            var projector = NullSpace.Projector(Moment(layer));
            _projectors[layer] = projector;
            log.Add(NullSpace.Describe(layer, projector));
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
        NullSpace.WriteTo(json);  // last, where params.json has always had them
        json.Remove("mom2_update_weight");
    }

    public new void Dispose()
    {
        foreach (var p in _projectors.Values) p.Dispose();
        _projectors.Clear();
        base.Dispose();
    }
}
