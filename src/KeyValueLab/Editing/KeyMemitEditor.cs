using KeyValueLab.Memory;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Editing;

/// <summary>
/// Key-MEMIT: MEMIT's multi-layer batch update moved to the key matrices (GPT-2 <c>c_fc</c>, GPT-J <c>fc_in</c>, Llama
/// <c>gate_proj</c>/<c>up_proj</c>), the key-side partner of <see cref="MemitEditor"/>.
/// </summary>
/// <remarks>
/// Targets, keys and the order of layers are MEMIT's (<see cref="MultiLayerEditorBase"/>); what changes is the matrix.
/// At layer l the residual share r (a change of the FFN output) becomes target pre-activation changes Δa_κ of each
/// edited key matrix (<see cref="KeySideTargets"/>, the smallest change that writes r to first order), and each key
/// matrix gets MEMIT's closed form with the FFN inputs in the role of MEMIT's keys: for FFN inputs H <c>[n, d_model]</c>
/// (template means at the subject's last token) and C = E[h hᵀ] of the FFN inputs over the statistics corpus,
/// ΔK_κ = Δa_κᵀ H (λC + HᵀH)⁻¹, the minimiser of λ‖ΔK C^½‖² + ‖ΔK Hᵀ − Δa_κᵀ‖² (MEMIT eq. 14 with K ↔ H). C is
/// d_model × d_model, four times smaller a side than MEMIT's.
/// </remarks>
public sealed class KeyMemitEditor(LocateEditHyperparameters hp, IReadOnlyList<int> layers, IReadOnlyList<KeyKind>? keyKinds, SecondMoments statistics)
    : MultiLayerEditorBase(hp, new EditScope(EditSide.Keys, layers, keyKinds), statistics)
{
    protected override HookPoint InputPoint(FfnMemory memory, int layer) => KeySideTargets.InputPoint(Scope, memory, layer);

    protected override void UpdateLayer(CausalLM model, ITokenizer tokenizer, IReadOnlyList<EditPrompt> own, FfnMemory memory, int layer, Tensor keys, Tensor residual)
    {
        using var scope = NewDisposeScope();
        var kinds = KeySideTargets.Kinds(Scope, memory);
        var changes = KeySideTargets.PreActivationChanges(model, own, memory, layer, kinds, residual, PadId(tokenizer));
        var h = keys.to(ScalarType.Float64);                                                  // [n, d_model]
        using var weight = Hp.Mom2UpdateWeight.ToScalar();  // held for the call (HeldScalars)
        var a = Moment(layer).to(ScalarType.Float64).mul(weight).Plus(h.t().matmul(h));  // [d_model, d_model]
        var adjusted = linalg.solve(a, h.t());                                                 // [d_model, n]
        for (int k = 0; k < kinds.Count; k++)
        {
            var delta = changes[k].to(ScalarType.Float64).t().matmul(adjusted.t()).to(ScalarType.Float32);   // [d_ff, d_model]
            using (no_grad()) memory.Keys(layer, kinds[k]).PlusInPlace(delta);
        }
    }
}
