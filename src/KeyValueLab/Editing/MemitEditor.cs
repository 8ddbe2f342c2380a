using KeyValueLab.Memory;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Editing;

/// <summary>
/// MEMIT (Meng et al. 2023): many facts at once, spread over the value matrices of a layer range. For each
/// request a target residual z (after the last layer of the range, at the subject's last token) is optimised
/// as in ROME; then for each layer l of the range, in order, with K = the requests' mean template keys
/// (value-module inputs) <c>[n, d_ff]</c> and R = (z − current residual)/(layers left),
/// ΔW = Rᵀ·((λC + KᵀK)⁻¹Kᵀ)ᵀ, i.e. Δ = R Kᵀ(λC + K Kᵀ)⁻¹ in MEMIT's column notation.
/// </summary>
public sealed class MemitEditor(LocateEditHyperparameters hp, IReadOnlyList<int> layers, SecondMoments statistics)
    : LocateEditorBase(hp, new EditScope(EditSide.Values, layers), statistics)
{
    public override bool JointBatch => true;

    protected override IReadOnlyList<MomentPoint> MomentPoints(FfnMemory memory) =>
        [.. Scope.Layers.Select(l => new MomentPoint(l, "value-input", HookPoint.Linear(memory.ValuesName(l), memory.ValueModule(l))))];

    public override EditReport Apply(CausalLM model, ITokenizer tokenizer, IReadOnlyList<EditRequest> requests)
    {
        var memory = new FfnMemory(model);
        var layers = Scope.Layers;
        int last = layers[^1];
        var zPoint = HookPoint.BlockOutput(model, last);
        int steps = 0;
        double loss = 0;
        using var scope = NewDisposeScope();

        // Target residuals z_i, one optimisation per request (MEMIT's compute_z).
        var zs = new List<Tensor>();
        foreach (var r in requests)
        {
            var (rewriting, kl) = Prompts(model, tokenizer, r);
            using var opt = TargetOptimizer.Optimize(model, [zPoint], rewriting, kl, Hp, PadId(tokenizer));
            zs.Add(opt.Vectors[0].Target.clone());
            steps += opt.Steps;
            loss += opt.FinalLoss;
        }
        var z = stack(zs);                                                                    // [n, d]
        var own = requests.Select(r => EditPrompts.Build(model, tokenizer, r.Prompt, r.Subject, null, Last)).ToList();

        for (int i = 0; i < layers.Count; i++)
        {
            int layer = layers[i];
            var valuePoint = HookPoint.Linear(memory.ValuesName(layer), memory.ValueModule(layer));
            var keys = stack(requests.Select(r => TemplateMeanInput(model, tokenizer, r, valuePoint)).ToList());   // [n, d_ff]
            var current = LookupActivations.AtLookup(model, own, zPoint, input: false, PadId(tokenizer));             // [n, d]
            var residual = (z - current) / (layers.Count - i);                                                    // [n, d]
            var c = Moment(layer).to(ScalarType.Float64);
            var k64 = keys.to(ScalarType.Float64);
            var a = Hp.Mom2UpdateWeight * c + k64.t().matmul(k64);                                               // [d_ff, d_ff]
            var adjusted = linalg.solve(a, k64.t());                                                               // [d_ff, n]
            var delta = residual.to(ScalarType.Float64).t().matmul(adjusted.t()).to(ScalarType.Float32);         // [d, d_ff]
            using (no_grad()) memory.Values(layer).add_(delta);
        }
        return new EditReport(steps, loss / requests.Count);
    }
}
