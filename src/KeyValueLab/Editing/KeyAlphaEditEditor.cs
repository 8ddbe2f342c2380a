using KeyValueLab.Memory;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Editing;

/// <summary>
/// Key-AlphaEdit: AlphaEdit's null-space-constrained update moved to the key matrices, as Key-ROME moved ROME's.
/// </summary>
/// <remarks>
/// Derivation. An FFN layer computes V m with memory coefficients m = f(K h + b) (Llama: act(K_gate h) ⊙ K_up h) of
/// the FFN input h (the residual stream after the block's norm). AlphaEdit changes V so that the new keys k (the
/// coefficients m at the subject) write the residual R, while the coefficients of preserved knowledge, K0, are
/// mapped by the change to exactly zero: with P the projector onto the null space of K0 K0ᵀ (approximated, as in the
/// paper, by the eigenvectors of C = E[m mᵀ] whose eigenvalue is below the threshold), the update is Δ = Δ̃ P and
/// Δ̃ minimises ‖Δ̃ P K − R‖² + ‖Δ̃ P K_p‖² + L2‖Δ̃ P‖², K_p the keys of earlier edits.
/// <para>
/// On the key side the same three steps apply to a different matrix, exactly as Key-ROME reads ROME:
/// </para><para>
/// 1. What the edit must write. The edited matrix is K_κ (each key matrix of the scope), its inputs are the FFN inputs
///    h, its outputs the pre-activations a. MEMIT's residual share r at layer l (<see cref="MultiLayerEditorBase"/>)
///    becomes target pre-activation changes Δa_κ, the smallest change that writes r to first order
///    (<see cref="KeySideTargets"/>). (Key-ROME optimises a* at the key output directly; in a multi-layer range the
///    target lives in the residual stream, as in MEMIT.)
/// </para><para>
/// 2. What must not move. The preserved knowledge is now the FFN inputs H0 of the statistics corpus, whose
///    pre-activations K_κ h0 must stay. P is built from C_h = E[h hᵀ] (d_model × d_model; the key-input statistics
///    Key-ROME uses): the eigenvectors with eigenvalue below the threshold. ΔK_κ = Δ̃ P then leaves K_κ h0 ≈ unchanged
///    for every h0 of that corpus, hence their coefficients m and the FFN's whole output, not only to first order.
/// </para><para>
/// 3. The closed form. With H the new FFN inputs <c>[n, d_model]</c> (template means at the subject's last token) and
///    H_p those of earlier edits, recomputed on the edited model after each batch, minimising
///    ‖Δ̃ P Hᵀ − Δa_κᵀ‖² + ‖Δ̃ P H_pᵀ‖² + L2‖Δ̃ P‖² gives AlphaEdit's equation with H for K and Δa_κ for R:
///    ΔK_κᵀ = (P(HᵀH + H_pᵀH_p) + L2·I)⁻¹ P Hᵀ Δa_κ, solved in the kept subspace (<see cref="NullSpaceProjector"/>).
/// </para>
/// The statistics and P are d_model × d_model, four times smaller a side than AlphaEdit's d_ff × d_ff.
/// </remarks>
public sealed class KeyAlphaEditEditor(LocateEditHyperparameters hp, NullSpaceSettings nullSpace, IReadOnlyList<int> layers, IReadOnlyList<KeyKind>? keyKinds, SecondMoments statistics)
    : NullSpaceEditorBase(hp, nullSpace, new EditScope(EditSide.Keys, layers, keyKinds), statistics)
{
    protected override HookPoint InputPoint(FfnMemory memory, int layer) => KeySideTargets.InputPoint(Scope, memory, layer);

    protected override void UpdateLayer(CausalLM model, ITokenizer tokenizer, IReadOnlyList<EditPrompt> own, FfnMemory memory, int layer, Tensor keys, Tensor residual)
    {
        using var scope = NewDisposeScope();
        var kinds = KeySideTargets.Kinds(Scope, memory);
        var changes = KeySideTargets.PreActivationChanges(model, own, memory, layer, kinds, residual, PadId(tokenizer));
        for (int k = 0; k < kinds.Count; k++)
        {
            var delta = Projector(layer).Delta(keys, changes[k], NullSpace.L2At(Projector(layer)));   // [d_ff, d_model]
            using (no_grad()) memory.Keys(layer, kinds[k]).PlusInPlace(delta);
        }
    }
}
