using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Editing;

/// <summary>
/// AlphaEdit's null-space projection for one edited matrix (Fang et al., ICLR 2025): P = Û Ûᵀ, Û the eigenvectors
/// of the count-normalised second moment C = E[x xᵀ] of the matrix's inputs whose eigenvalue (= singular value: C is
/// symmetric positive semi-definite) is below the threshold, and the keys of every earlier edit, K_p.
/// </summary>
/// <remarks>
/// <para>
/// The reference code (jianghoucheng/AlphaEdit, AlphaEdit_main.py) keeps P and K_pK_pᵀ as dense d × d matrices and
/// solves Δᵀ = (P(K Kᵀ + K_pK_pᵀ) + L2·I)⁻¹ P K Rᵀ, with K <c>[d, n]</c> the new keys and R <c>[d_out, n]</c> the
/// residuals. Because P K Rᵀ lies in the range of Û, so does the solution, and writing it as Û Y gives
/// Û(L2·I + Ûᵀ M Û)Y = Û Ûᵀ K Rᵀ with M = K Kᵀ + K_pK_pᵀ, hence exactly
/// <code>Δᵀ = Û (L2·I_k + Ûᵀ M Û)⁻¹ Ûᵀ K Rᵀ</code>
/// a k × k symmetric positive-definite solve. Only Ûᵀ K_p is ever needed, so K_p is stored projected: as the k × N
/// projected keys while N ≤ k, and as their k × k Gram matrix once that is smaller. Memory: Û (d × k) plus at most
/// k × min(N, k), against the reference's 2·d² per layer.
/// </para>
/// <para>The kept subspace is the part of input space that the statistics' inputs (the knowledge to preserve) hardly
/// use: an update of the form Δ = (…)Ûᵀ maps every input orthogonal to Û, i.e. in the span of the large-eigenvalue
/// directions, to exactly zero.</para>
/// </remarks>
public sealed class NullSpaceProjector : IDisposable
{
    private readonly Tensor _basis;           // Û [d, k] float32
    private Tensor? _projectedKeys;           // Ûᵀ K_p [k, N] while N ≤ k
    private Tensor? _gram;                    // Ûᵀ K_p K_pᵀ Û [k, k] once N > k

    /// <param name="moment">C = E[x xᵀ] <c>[d, d]</c> (normalised by the count, as AlphaEdit's get_cov).</param>
    /// <param name="threshold">Keep directions whose eigenvalue is below this (AlphaEdit: nullspace_threshold 2e-2).</param>
    public NullSpaceProjector(Tensor moment, double threshold)
        : this(moment, values =>
        {
            using var below = threshold.ToScalar();  // held for the call (HeldScalars)
            return values.lt(below).nonzero().flatten();
        }) => Cut = threshold;

    /// <summary>
    /// A projector keeping the <c>round(fraction · d)</c> directions of smallest eigenvalue: the threshold set relative to the
    /// spectrum (<c>nullspace_kept_fraction</c>) instead of as an absolute eigenvalue. <see cref="Cut"/> is then the largest kept eigenvalue.
    /// </summary>
    public static NullSpaceProjector KeepingFraction(Tensor moment, double fraction)
    {
        if (!(fraction > 0 && fraction <= 1)) throw new ArgumentOutOfRangeException(nameof(fraction), fraction, "the kept fraction must be in (0, 1]");
        long keep = (long)Math.Round(fraction * moment.shape[0], MidpointRounding.AwayFromZero);
        double cut = 0;
        var projector = new NullSpaceProjector(moment, values =>
        {
            // eigh returns the eigenvalues in ascending order: the first `keep` are the smallest.
            if (keep > 0) cut = values[keep - 1].item<double>();
            return tensor(Enumerable.Range(0, (int)keep).Select(i => (long)i).ToArray());   // indices 0 … keep−1, no temporary Scalar (HeldScalars)
        });
        projector.Cut = cut;
        return projector;
    }

    private NullSpaceProjector(Tensor moment, Func<Tensor, Tensor> select)
    {
        if (moment.dim() != 2 || moment.shape[0] != moment.shape[1]) throw new ArgumentException("the second moment must be square", nameof(moment));
        using var scope = NewDisposeScope();
        var c = moment.to(ScalarType.Float64);
        var (values, vectors) = linalg.eigh(c.Plus(c.t()).div(HeldScalars.Two));
        var keep = select(values);
        Kept = (int)keep.shape[0];
        Dim = (int)moment.shape[0];
        KeptTrace = values.index_select(0, keep).sum().item<double>();
        _basis = vectors.index_select(1, keep).to(ScalarType.Float32).contiguous().DetachFromDisposeScope();
    }

    /// <summary>A projector onto a given kept basis Û <c>[d, k]</c> (orthonormal columns; copied as float32), without an
    /// eigendecomposition: for a P computed elsewhere, and for timing the update at a shape whose decomposition is too slow to wait for.</summary>
    public NullSpaceProjector(Tensor basis) : this(basis, copy: true) { }

    /// <summary>
    /// As <see cref="NullSpaceProjector(Tensor)"/>, but a float32 contiguous <paramref name="basis"/> is taken over, not copied
    /// (its storage is shared; the caller may dispose its handle and must not change the values): at GPT-J's width a copy is
    /// 0.75 GB per layer that would exist twice while the store is built.
    /// </summary>
    public static NullSpaceProjector Adopting(Tensor basis) => new(basis, copy: false);

    private NullSpaceProjector(Tensor basis, bool copy)
    {
        if (basis.dim() != 2 || basis.shape[1] > basis.shape[0]) throw new ArgumentException("the basis must be d × k with k <= d", nameof(basis));
        Dim = (int)basis.shape[0];
        Kept = (int)basis.shape[1];
        // In a scope: the detached, converted and contiguous handles in between would otherwise keep the caller's storage
        // alive until the GC finalises them (measured: six GPT-J layers held 9.9 GB instead of their 5.1 GB of stores).
        using var scope = NewDisposeScope();
        var converted = basis.detach().to(ScalarType.Float32).contiguous();
        _basis = (copy ? converted.clone() : converted.alias()).DetachFromDisposeScope();
    }

    /// <summary>Input dimension d.</summary>
    public int Dim { get; }

    /// <summary>Directions kept (k): the rank of P.</summary>
    public int Kept { get; }

    /// <summary>
    /// An upper bound of the kept eigenvalues: the absolute threshold, or with <see cref="KeepingFraction"/> the largest kept
    /// eigenvalue; null for a projector built from a given basis. <c>l2_relative</c> scales L2 by <see cref="Kept"/> × this.
    /// </summary>
    public double? Cut { get; private set; }

    /// <summary>Σ of the kept eigenvalues, tr(Ûᵀ C Û) = E‖Ûᵀx‖² over the statistics' inputs (0 for a given basis).</summary>
    public double KeptTrace { get; }

    /// <summary>Earlier edits' keys added so far (N).</summary>
    public long HistoryCount { get; private set; }

    /// <summary>Û <c>[d, k]</c>: P's kept eigenvectors (P = Û Ûᵀ).</summary>
    public Tensor Basis => _basis;

    /// <summary>Bytes held for P and K_p (Û plus the projected key store).</summary>
    public long Bytes => 4 * (_basis.numel() + (_projectedKeys?.numel() ?? 0) + (_gram?.numel() ?? 0));

    /// <summary>
    /// AlphaEdit's update for new keys <paramref name="keys"/> <c>[n, d]</c> and residuals <paramref name="residuals"/>
    /// <c>[n, d_out]</c>: Δ <c>[d_out, d]</c> in the weight's [out, in] order, computed in float32 as the reference does.
    /// </summary>
    public Tensor Delta(Tensor keys, Tensor residuals, double l2)
    {
        using var scope = NewDisposeScope();
        if (Kept == 0) return zeros(residuals.shape[1], Dim).MoveToOuterDisposeScope();
        var projected = _basis.t().matmul(keys.t());                           // Ûᵀ K [k, n]
        var gram = projected.matmul(projected.t());                            // Ûᵀ K Kᵀ Û [k, k]
        if (_gram is not null) gram = gram.Plus(_gram);
        if (_projectedKeys is not null) gram = gram.Plus(_projectedKeys.matmul(_projectedKeys.t()));
        using var ridge = l2.ToScalar();  // held for the call (HeldScalars)
        var a = gram.add(eye(Kept), ridge);                                   // Ûᵀ M Û + L2·I
        var y = linalg.solve(a, projected.matmul(residuals));                   // (L2 I + Ûᵀ M Û)⁻¹ Ûᵀ K Rᵀ [k, d_out]
        return _basis.matmul(y).t().contiguous().MoveToOuterDisposeScope();     // (Û Y)ᵀ [d_out, d]
    }

    /// <summary>K_pK_pᵀ += K Kᵀ for keys <paramref name="keys"/> <c>[n, d]</c> (recomputed on the edited model).</summary>
    public void AddHistory(Tensor keys)
    {
        if (Kept == 0) { HistoryCount += keys.shape[0]; return; }
        using var scope = NewDisposeScope();
        var projected = _basis.t().matmul(keys.t());                           // [k, n]
        if (_gram is not null) _gram.PlusInPlace(projected.matmul(projected.t()));
        else
        {
            var all = _projectedKeys is null ? projected : cat([_projectedKeys, projected], 1);
            _projectedKeys?.Dispose();
            _projectedKeys = null;
            if (all.shape[1] > Kept) _gram = all.matmul(all.t()).DetachFromDisposeScope();
            else _projectedKeys = all.contiguous().DetachFromDisposeScope();
        }
        HistoryCount += keys.shape[0];
    }

    /// <summary>Ûᵀ K_pK_pᵀ Û <c>[k, k]</c>, for checks.</summary>
    public Tensor ProjectedHistory()
    {
        using var scope = NewDisposeScope();
        var g = _gram is not null ? _gram.clone() : _projectedKeys is not null ? _projectedKeys.matmul(_projectedKeys.t()) : zeros(Kept, Kept);
        return g.MoveToOuterDisposeScope();
    }

    /// <summary>Forgets every earlier edit (a single edit must start from clean state, SPEC §7).</summary>
    public void ResetHistory()
    {
        _projectedKeys?.Dispose();
        _gram?.Dispose();
        (_projectedKeys, _gram, HistoryCount) = (null, null, 0);
    }

    public void Dispose()
    {
        ResetHistory();
        _basis.Dispose();
    }
}
