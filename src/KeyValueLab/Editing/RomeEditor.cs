using KeyValueLab.Memory;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Editing;

/// <summary>
/// ROME (Meng et al. 2022) on the values: a rank-one update of one layer's value matrix (GPT-2 <c>c_proj</c>,
/// GPT-J <c>fc_out</c>, Llama <c>down_proj</c>) so that the memory coefficients at the subject's last token,
/// k*, write the optimised vector v*: ΔW = (v* − W k) ⊗ u / (kᵀu), u = C⁻¹k*, C = E[k kᵀ] over a corpus of
/// the value matrix's inputs. Several requests are applied one after another (as ROME's apply_rome_to_model).
/// </summary>
public sealed class RomeEditor(LocateEditHyperparameters hp, int layer, SecondMoments statistics)
    : LocateEditorBase(hp, new EditScope(EditSide.Values, [layer]), statistics)
{
    public int Layer { get; } = layer;
    public override bool JointBatch => false;

    protected override IReadOnlyList<MomentPoint> MomentPoints(FfnMemory memory) =>
        [new MomentPoint(Layer, "value-input", HookPoint.Linear(memory.ValuesName(Layer), memory.ValueModule(Layer)))];

    public override EditReport Apply(CausalLM model, ITokenizer tokenizer, IReadOnlyList<EditRequest> requests)
    {
        var memory = new FfnMemory(model);
        var module = (HookPoint.Linear(memory.ValuesName(Layer), memory.ValueModule(Layer)), memory.Values(Layer));
        var reports = requests.Select(r => RankOne(model, tokenizer, r, Layer, [module])).ToList();
        return new EditReport(reports.Sum(x => x.Steps), reports.Average(x => x.FinalLoss));
    }
}
