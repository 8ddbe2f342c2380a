using KeyValueLab.Inference;
using KeyValueLab.Memory;
using KeyValueLab.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Editing;

/// <summary>
/// Turns a layer's share r of MEMIT's residual (a change of the FFN output, <c>[d_model]</c>) into changes of the key
/// matrices' outputs (pre-activations, <c>[d_ff]</c> per key matrix) that produce it to first order, for the key-side
/// multi-layer editors (Key-MEMIT, Key-AlphaEdit).
/// </summary>
/// <remarks>
/// The FFN writes V m, with memory coefficients m_i = f(a_i) (GPT-2, GPT-J) or act(g_i)·u_i (Llama), each depending
/// on its own pre-activations only. So ∂(V m)/∂a_κ = V diag(d_κ) with d_κ = ∂m/∂a_κ, read in one backward pass of
/// Σ m through a zero δ added at the subject's last token. The smallest change Δa = (Δa_κ)_κ with
/// Σ_κ V diag(d_κ) Δa_κ = r is Δa_κ = d_κ ⊙ Vᵀ y, y = (Σ_κ V diag(d_κ²) Vᵀ)⁻¹ r (a d_model × d_model system per
/// request). The FFN is not linear: a few Gauss–Newton steps (re-linearised at the changed pre-activations, damped
/// as Levenberg–Marquardt) reach r at the lookup token itself, and the next layer of the range measures what is still
/// missing on the edited model, as MEMIT's own procedure does.
/// </remarks>
internal static class KeySideTargets
{
    /// <summary>The key matrices in scope: <c>[null]</c> on one-key architectures, else the resolved kinds.</summary>
    public static IReadOnlyList<KeyKind?> Kinds(EditScope scope, FfnMemory memory) =>
        memory.KeyKinds.Count == 1 ? [null] : [.. scope.ResolveKeyKinds(memory).Select(k => (KeyKind?)k)];

    /// <summary>The FFN input at <paramref name="layer"/>, read at the first key matrix in scope (all share it).</summary>
    public static HookPoint InputPoint(EditScope scope, FfnMemory memory, int layer)
    {
        var kind = Kinds(scope, memory)[0];
        return HookPoint.Linear(memory.KeysName(layer, kind), memory.KeyModule(layer, kind));
    }

    /// <summary>
    /// Δa_κ <c>[n, d_ff]</c> for each key matrix <paramref name="kinds"/> (null = the only one) at <paramref name="layer"/>,
    /// for residual shares <paramref name="residual"/> <c>[n, d_model]</c> at the lookup tokens of <paramref name="own"/>.
    /// </summary>
    public static Tensor[] PreActivationChanges(CausalLM model, IReadOnlyList<EditPrompt> own, FfnMemory memory, int layer,
        IReadOnlyList<KeyKind?> kinds, Tensor residual, int padId)
    {
        using var scope = NewDisposeScope();
        var v = memory.Values(layer).detach().to(ScalarType.Float64);                          // [d, d_ff]
        int n = own.Count;
        var steps = kinds.Select(_ => zeros(n, memory.Memories)).ToArray();
        Tensor? target = null;
        for (int iteration = 0; iteration < GaussNewtonSteps; iteration++)
        {
            var (derivatives, output) = Linearise(model, own, memory, layer, kinds, steps, padId);   // per kind [n, d_ff]; [n, d]
            target ??= output.to(ScalarType.Float64).Plus(residual.to(ScalarType.Float64));
            var missing = target - output.to(ScalarType.Float64);                                 // [n, d]
            for (int j = 0; j < n; j++)
            {
                var d64 = derivatives.Select(d => d[j].to(ScalarType.Float64)).ToArray();
                var d2 = d64.Select(d => d.mul(d)).Aggregate((a, b) => a.Plus(b));                // Σ d² [d_ff]
                var g = (v * d2).matmul(v.t());                                                  // V diag(Σ d²) Vᵀ [d, d]
                using var damping = (Damping * g.trace().item<double>() / g.shape[0] + 1e-12).ToScalar();  // held for the call (HeldScalars)
                var y = linalg.solve(g.add(eye(g.shape[0], dtype: ScalarType.Float64), damping), missing[j]);  // G + damping·I
                var vty = v.t().matmul(y);                                                       // [d_ff]
                for (int k = 0; k < kinds.Count; k++) steps[k][j] = steps[k][j].Plus((d64[k] * vty).to(ScalarType.Float32));
            }
        }
        return [.. steps.Select(c => c.MoveToOuterDisposeScope())];
    }

    /// <summary>Gauss–Newton steps: the first is the first-order solution, the next ones correct for the FFN's curvature.</summary>
    private const int GaussNewtonSteps = 3;

    /// <summary>Levenberg–Marquardt damping, relative to the mean eigenvalue of J Jᵀ: keeps steps finite where units saturate.</summary>
    private const double Damping = 1e-3;

    /// <summary>
    /// With <paramref name="offsets"/> added to the key outputs at each prompt's lookup token: d_κ = ∂(Σ m)/∂a_κ there
    /// <c>[n, d_ff]</c> (m_i depends on a_κ,i alone) and the FFN output there <c>[n, d]</c>.
    /// </summary>
    private static (Tensor[] Derivatives, Tensor Output) Linearise(CausalLM model, IReadOnlyList<EditPrompt> own, FfnMemory memory, int layer,
        IReadOnlyList<KeyKind?> kinds, Tensor[] offsets, int padId)
    {
        var sequences = own.Select(p => (IReadOnlyList<int>)p.PromptIds).ToArray();
        using var batch = TokenBatch.RightPadded(sequences, padId);
        int n = own.Count, t = batch.Width;
        var mask = new float[n * t];
        for (int i = 0; i < n; i++) mask[i * t + own[i].LookupIndex] = 1;
        using var lookup = tensor(mask, [n, t, 1]);
        using var rows = tensor(Enumerable.Range(0, n).Select(i => (long)i).ToArray());
        using var cols = tensor(own.Select(p => (long)p.LookupIndex).ToArray());
        using var frozen = new FrozenParameters(model);
        var deltas = offsets.Select(o => o.unsqueeze(1).clone().requires_grad_(true).DetachFromDisposeScope()).ToArray();
        Tensor? coefficients = null, output = null;
        var hooks = new List<IDisposable>();
        try
        {
            for (int k = 0; k < kinds.Count; k++)
            {
                var delta = deltas[k];
                hooks.Add(HookPoint.Linear(memory.KeysName(layer, kinds[k]), memory.KeyModule(layer, kinds[k])).Install((_, y) => y.Plus(lookup * delta)));
            }
            hooks.Add(HookPoint.Linear(memory.ValuesName(layer), memory.ValueModule(layer)).Install((x, y) =>
            {
                coefficients = x.index(rows, cols).DetachFromDisposeScope();                      // [n, d_ff], still in the graph
                output = y.index(rows, cols).detach().clone().DetachFromDisposeScope();          // [n, d]
                return y;
            }));
            using (var pass = NewDisposeScope())
            {
                model.Forward(batch.InputIds, batch.AttentionMask, batch.PositionIds);
                if (coefficients is null) throw new InvalidOperationException($"the forward pass did not reach layer {layer}'s value module");
                coefficients.sum().backward();
            }
            return ([.. deltas.Select(d => d.grad!.squeeze(1).detach().clone())], output!);
        }
        finally
        {
            foreach (var h in hooks) h.Dispose();
            coefficients?.Dispose();
            foreach (var d in deltas) d.Dispose();
        }
    }
}
