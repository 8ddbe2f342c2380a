using KeyValueLab.Memory;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Editing;

/// <summary>
/// Key-ROME: ROME's closed form moved to the key side.
/// </summary>
/// <remarks>
/// Derivation. An FFN layer computes FFN(h) = V f(a) with pre-activations a = K h + b (Llama: two key
/// matrices, f(a_gate) ⊙ a_up). ROME asks the value matrix to map the subject's coefficient vector k* to a new
/// vector v*. Here we instead ask the key matrix to map the subject's FFN input h* (the residual stream after
/// the block's norm at the subject's last token) to new pre-activations a*, i.e. new memory coefficients
/// f(a*), leaving V, and so what every memory writes, untouched: the edit changes <i>which</i> memories fire.
/// <para>
/// 1. Target coefficients: exactly ROME's compute_v, with the hook on the key module's output: a δ added to
///    a at the subject's last token is optimised (Adam, same loss: target NLL over the context templates +
///    KL on "{} is a" + ‖δ‖ decay, ‖δ‖ ≤ clamp·‖a₀‖), giving a* = a₀ + δ. Gradients flow through f (and for
///    Llama through both gate and up, each with its own δ when both are edited).
/// </para><para>
/// 2. Rank-one update of K: minimise ‖ΔK H‖² over a corpus of FFN inputs H (keeping every other input's
///    pre-activations) subject to (K + ΔK) h* = a* − b. As in ROME (Meng et al. 2022, eq. 2 and App. A),
///    with C = E[h hᵀ] (uncentred second moment of the FFN inputs) the solution is
///    ΔK = (a* − K h − b) ⊗ u / (hᵀu), u = C⁻¹ h̄*, h̄* the mean FFN input at the subject's last token over
///    the context templates, h the input on the request's own prompt.
/// </para>
/// Because K is <c>[memories, d_model]</c> and C is d_model × d_model, the statistics are 4× smaller per side
/// than ROME's (d_ff × d_ff) and the update touches d_ff·d_model weights, as ROME's does.
/// </remarks>
public sealed class KeyRomeEditor(LocateEditHyperparameters hp, int layer, IReadOnlyList<KeyKind>? keyKinds, SecondMoments statistics)
    : LocateEditorBase(hp, new EditScope(EditSide.Keys, [layer], keyKinds), statistics)
{
    public int Layer { get; } = layer;
    public override bool JointBatch => false;

    protected override IReadOnlyList<MomentPoint> MomentPoints(FfnMemory memory)
    {
        var kind = Kinds(memory)[0];
        return [new MomentPoint(Layer, "key-input", HookPoint.Linear(memory.KeysName(Layer, kind), memory.KeyModule(Layer, kind)))];
    }

    public override EditReport Apply(CausalLM model, ITokenizer tokenizer, IReadOnlyList<EditRequest> requests)
    {
        var memory = new FfnMemory(model);
        var modules = Kinds(memory).Select(k => (HookPoint.Linear(memory.KeysName(Layer, k), memory.KeyModule(Layer, k)), memory.Keys(Layer, k))).ToList();
        var reports = requests.Select(r => RankOne(model, tokenizer, r, Layer, modules)).ToList();
        return new EditReport(reports.Sum(x => x.Steps), reports.Average(x => x.FinalLoss));
    }

    private IReadOnlyList<KeyKind?> Kinds(FfnMemory memory) =>
        memory.KeyKinds.Count == 1 ? [null] : [.. Scope.ResolveKeyKinds(memory).Select(k => (KeyKind?)k)];
}
