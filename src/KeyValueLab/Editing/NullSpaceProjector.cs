using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Editing;

/// <summary>Which basis of P a <see cref="NullSpaceProjector"/> stores: the smaller one, unless told.</summary>
public enum NullSpaceBasis
{
    /// <summary>Û <c>[d, k]</c>, the kept directions: P = Û Ûᵀ; keys are stored in the k coordinates Ûᵀx.</summary>
    Kept,

    /// <summary>Ū <c>[d, d − k]</c>, the removed directions: P = I − Ū Ūᵀ; keys are stored as the d-vectors P x.</summary>
    Removed,
}

/// <summary>
/// AlphaEdit's null-space projection for one edited matrix (Fang et al., ICLR 2025): P = Û Ûᵀ, Û the eigenvectors
/// of the count-normalised second moment C = E[x xᵀ] of the matrix's inputs whose eigenvalue (= singular value: C is
/// symmetric positive semi-definite) is below the threshold, and the keys of every earlier edit, K_p.
/// </summary>
/// <remarks>
/// <para>
/// The reference code (jianghoucheng/AlphaEdit, AlphaEdit_main.py) keeps P and K_pK_pᵀ as dense d × d matrices and
/// solves Δᵀ = (P(K Kᵀ + K_pK_pᵀ) + L2·I)⁻¹ P K Rᵀ, with K <c>[d, n]</c> the new keys and R <c>[n, d_out]</c> the
/// residuals. With B = P [K, K_p] <c>[d, m]</c>, m = n + N, P M P = B Bᵀ for M = K Kᵀ + K_pK_pᵀ, and because P K Rᵀ lies in
/// the range of P, so does the solution X; there P M X = P M P X, so X solves (L2·I + B Bᵀ) X = B E Rᵀ, E = [I_n; 0]
/// <c>[m, n]</c>. Both forms below follow from it exactly:
/// <code>Δᵀ = (L2·I + B Bᵀ)⁻¹ P K · R  =  B (L2·I_m + BᵀB)⁻¹ E · R</code>
/// the first a solve in P's coordinates, the second (the push-through identity (L2·I + B Bᵀ)B = B(L2·I_m + BᵀB)) an m × m
/// solve, used while m is below the coordinates' dimension: at GPT-J's width (16,384, 11,469 kept) and 2,000 edits it is
/// 2,100² instead of 11,469², with no k × k matrix at all. Neither subtracts large terms (both systems are positive
/// definite with smallest eigenvalue L2), and Δ is a rank-n update V·R, V <c>[d, n]</c>.
/// </para>
/// <para>
/// Storage, each the smaller of two exact forms: P as Û (k ≤ d − k) or as the removed directions Ū (P = I − Ū Ūᵀ:
/// at 70% kept, 0.3·d² instead of 0.7·d²); K_p only as P K_p in P's coordinates (Ûᵀ K_p, k × N, or P K_p, d × N) with its
/// N × N Gram matrix, or as their r × r Gram matrix once that is smaller (r = k or d). Memory: the basis plus at most
/// r·N + N² or r², against the reference's 2·d² per layer. The eigendecomposition runs once, in float32 (reading one
/// triangle of C, no float64 or symmetrised copy) above <see cref="Float64DecompositionLimit"/>, and its eigenvectors and
/// LAPACK's workspace are freed before the constructor returns, so at most one layer's decomposition exists at a time (docs/performance.md, "Lifelong editors").
/// </para>
/// <para>The kept subspace is the part of input space that the statistics' inputs (the knowledge to preserve) hardly
/// use: an update of the form Δ = (…)P maps every input orthogonal to Û, i.e. in the span of the large-eigenvalue
/// directions, to exactly zero.</para>
/// </remarks>
public sealed class NullSpaceProjector : IDisposable
{
    private readonly Tensor _basis;           // Û [d, k] or Ū [d, d − k], float32
    private Tensor? _keys;                    // P K_p in P's coordinates [r, N] while stored raw
    private Tensor? _keysGram;                // _keysᵀ _keys [N, N], beside _keys
    private Tensor? _gram;                    // _keys _keysᵀ [r, r], once smaller than the two above

    /// <param name="moment">C = E[x xᵀ] <c>[d, d]</c> (normalised by the count, as AlphaEdit's get_cov).</param>
    /// <param name="threshold">Keep directions whose eigenvalue is below this (AlphaEdit: nullspace_threshold 2e-2).</param>
    /// <param name="store">Which basis to store (default: the smaller; both give the same Δ).</param>
    /// <param name="precision">The decomposition's type (default: <see cref="DecompositionType"/>).</param>
    public NullSpaceProjector(Tensor moment, double threshold, NullSpaceBasis? store = null, ScalarType? precision = null)
        : this(moment, values =>
        {
            using var below = threshold.ToScalar();  // held for the call (HeldScalars)
            return values.lt(below).sum().item<long>();   // eigh's eigenvalues ascend: the kept ones are a prefix
        }, store, precision) => Cut = threshold;

    /// <summary>
    /// A projector keeping the <c>round(fraction · d)</c> directions of smallest eigenvalue: the threshold set relative to the
    /// spectrum (<c>nullspace_kept_fraction</c>) instead of as an absolute eigenvalue. <see cref="Cut"/> is then the largest kept eigenvalue.
    /// </summary>
    public static NullSpaceProjector KeepingFraction(Tensor moment, double fraction, NullSpaceBasis? store = null, ScalarType? precision = null)
    {
        if (!(fraction > 0 && fraction <= 1)) throw new ArgumentOutOfRangeException(nameof(fraction), fraction, "the kept fraction must be in (0, 1]");
        long keep = (long)Math.Round(fraction * moment.shape[0], MidpointRounding.AwayFromZero);
        double cut = 0;
        var projector = new NullSpaceProjector(moment, values =>
        {
            // eigh returns the eigenvalues in ascending order: the first `keep` are the smallest.
            if (keep > 0) cut = values[keep - 1].to(ScalarType.Float64).item<double>();
            return keep;
        }, store, precision);
        projector.Cut = cut;
        return projector;
    }

    /// <summary>
    /// The widest C decomposed in float64 (symmetrised, as before); wider ones are decomposed in float32. float64 holds the
    /// plain float64 formula's Δ to 1e-5 (float32 eigenvectors miss it: 1.4e-5–1.7e-5 on NullSpaceTests' 24-wide fixture) but
    /// costs about 32·d² bytes while it runs (the float64 copy, the eigenvectors and LAPACK syevd's 2d² workspace): 0.5 GB at
    /// 4,096, 8.6 GB at GPT-J's 16,384, where float32 needs 12·d² (3.2 GB) and the null-space bound (1e-4) still holds
    /// (measured: docs/performance.md, "Lifelong editors").
    /// </summary>
    public const int Float64DecompositionLimit = 4096;

    /// <summary>The type a d × d second moment is decomposed in: float64 up to <see cref="Float64DecompositionLimit"/>, else float32.</summary>
    public static ScalarType DecompositionType(long d) => d <= Float64DecompositionLimit ? ScalarType.Float64 : ScalarType.Float32;

    private NullSpaceProjector(Tensor moment, Func<Tensor, long> keptCount, NullSpaceBasis? store, ScalarType? precision)
    {
        if (moment.dim() != 2 || moment.shape[0] != moment.shape[1]) throw new ArgumentException("the second moment must be square", nameof(moment));
        using var scope = NewDisposeScope();
        Tensor values, vectors;
        if ((precision ?? DecompositionType(moment.shape[0])) == ScalarType.Float64)
        {
            var c = moment.to(ScalarType.Float64);
            (values, vectors) = linalg.eigh(c.Plus(c.t()).div(HeldScalars.Two));
        }
        else (values, vectors) = linalg.eigh(moment.to(ScalarType.Float32));   // reads C's lower triangle: no symmetrised copy
        long kept = keptCount(values);
        Dim = (int)moment.shape[0];
        Kept = (int)kept;
        KeptTrace = values.narrow(0, 0, kept).to(ScalarType.Float64).sum().item<double>();
        Stored = store ?? (Kept <= Dim - Kept ? NullSpaceBasis.Kept : NullSpaceBasis.Removed);
        var basis = Stored == NullSpaceBasis.Kept ? vectors.narrow(1, 0, kept) : vectors.narrow(1, kept, Dim - kept);
        // Its own storage (the d × d eigenvectors go with the scope): a contiguous slice would share theirs.
        basis = basis.to(ScalarType.Float32);
        _basis = (basis.is_contiguous() ? basis.clone() : basis.contiguous()).DetachFromDisposeScope();
    }

    /// <summary>A projector onto a given kept basis Û <c>[d, k]</c> (orthonormal columns; copied as float32), without an
    /// eigendecomposition: for a P computed elsewhere, and for timing the update at a shape whose decomposition is too slow to wait for.</summary>
    public NullSpaceProjector(Tensor basis) : this(basis, NullSpaceBasis.Kept, copy: true) { }

    /// <summary>
    /// As <see cref="NullSpaceProjector(Tensor)"/>, but a float32 contiguous <paramref name="basis"/> is taken over, not copied
    /// (its storage is shared; the caller may dispose its handle and must not change the values): at GPT-J's width a copy is
    /// 0.75 GB per layer that would exist twice while the store is built. <paramref name="form"/> says whether it holds the kept
    /// directions (P = Û Ûᵀ) or the removed ones (P = I − Ū Ūᵀ).
    /// </summary>
    public static NullSpaceProjector Adopting(Tensor basis, NullSpaceBasis form = NullSpaceBasis.Kept) => new(basis, form, copy: false);

    private NullSpaceProjector(Tensor basis, NullSpaceBasis form, bool copy)
    {
        if (basis.dim() != 2 || basis.shape[1] > basis.shape[0]) throw new ArgumentException("the basis must be d × k with k <= d", nameof(basis));
        Dim = (int)basis.shape[0];
        Stored = form;
        Kept = form == NullSpaceBasis.Kept ? (int)basis.shape[1] : Dim - (int)basis.shape[1];
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

    /// <summary>Which basis is stored: Û (kept) or Ū (removed).</summary>
    public NullSpaceBasis Stored { get; }

    /// <summary>The dimension r of P's coordinates, in which the keys are stored: k (Û stored) or d (Ū stored).</summary>
    public int CoordinateDim => Stored == NullSpaceBasis.Kept ? Kept : Dim;

    /// <summary>
    /// An upper bound of the kept eigenvalues: the absolute threshold, or with <see cref="KeepingFraction"/> the largest kept
    /// eigenvalue; null for a projector built from a given basis. <c>l2_relative</c> scales L2 by <see cref="Kept"/> × this.
    /// </summary>
    public double? Cut { get; private set; }

    /// <summary>Σ of the kept eigenvalues, tr(Ûᵀ C Û) = E‖Ûᵀx‖² over the statistics' inputs (0 for a given basis).</summary>
    public double KeptTrace { get; }

    /// <summary>Earlier edits' keys added so far (N).</summary>
    public long HistoryCount { get; private set; }

    /// <summary>The stored basis: Û <c>[d, k]</c> or Ū <c>[d, d − k]</c> (see <see cref="Stored"/>).</summary>
    public Tensor Basis => _basis;

    /// <summary>Whether K_p is stored as its r × r Gram matrix (else as the r × N projected keys and their N × N Gram).</summary>
    public bool HistoryAsGram => _gram is not null;

    /// <summary>Bytes held for P and K_p (the basis plus the key store).</summary>
    public long Bytes => 4 * (_basis.numel() + (_keys?.numel() ?? 0) + (_keysGram?.numel() ?? 0) + (_gram?.numel() ?? 0));

    /// <summary>x <c>[d, n]</c> in P's coordinates <c>[r, n]</c>: Ûᵀx, or P x = x − Ū(Ūᵀx).</summary>
    private Tensor Coordinates(Tensor x) => Stored == NullSpaceBasis.Kept ? _basis.t().matmul(x) : Project(x);

    /// <summary>Coordinates <c>[r, n]</c> back in input space <c>[d, n]</c>: Û y, or P y (y lies in P's range; projected again
    /// so that rounding in the solve cannot leak into the removed directions).</summary>
    private Tensor InputSpace(Tensor y) => Stored == NullSpaceBasis.Kept ? _basis.matmul(y) : Project(y);

    private Tensor Project(Tensor x) => _basis.shape[1] == 0 ? x.clone() : x.sub(_basis.matmul(_basis.t().matmul(x)));

    /// <summary>
    /// AlphaEdit's update for new keys <paramref name="keys"/> <c>[n, d]</c> and residuals <paramref name="residuals"/>
    /// <c>[n, d_out]</c>: Δ <c>[d_out, d]</c> in the weight's [out, in] order, computed in float32 as the reference does.
    /// </summary>
    public Tensor Delta(Tensor keys, Tensor residuals, double l2)
    {
        using var scope = NewDisposeScope();
        if (Kept == 0) return zeros(residuals.shape[1], Dim).MoveToOuterDisposeScope();
        long n = keys.shape[0], stored = _keys?.shape[1] ?? 0;
        using var ridge = l2.ToScalar();  // held for the call (HeldScalars)
        var kc = Coordinates(keys.t());                                        // P K in P's coordinates [r, n]
        Tensor v;                                                              // (L2·I + B Bᵀ)⁻¹ P K [r, n]
        if (_gram is null && n + stored <= CoordinateDim)
        {
            // B (L2·I_m + BᵀB)⁻¹ E, B = [P K, P K_p]: an m × m solve.
            var s = kc.t().matmul(kc);                                         // [n, n]
            if (_keys is not null)
            {
                var cross = kc.t().matmul(_keys);                              // [n, N]
                s = cat([cat([s, cross], 1), cat([cross.t(), _keysGram!], 1)], 0);
            }
            long m = n + stored;
            var w = linalg.solve(s.add(eye(m), ridge), eye(m, n));             // [m, n]
            v = kc.matmul(w.narrow(0, 0, n));
            if (_keys is not null) v = v.Plus(_keys.matmul(w.narrow(0, n, stored)));
        }
        else
        {
            var a = kc.matmul(kc.t());                                         // [r, r]
            if (_gram is not null) a = a.Plus(_gram);
            if (_keys is not null) a = a.Plus(_keys.matmul(_keys.t()));
            v = linalg.solve(a.add(eye(CoordinateDim), ridge), kc);
        }
        return residuals.t().matmul(InputSpace(v).t()).contiguous().MoveToOuterDisposeScope();   // (V R)ᵀ [d_out, d]
    }

    /// <summary>K_pK_pᵀ += K Kᵀ for keys <paramref name="keys"/> <c>[n, d]</c> (recomputed on the edited model).</summary>
    public void AddHistory(Tensor keys)
    {
        if (Kept == 0) { HistoryCount += keys.shape[0]; return; }
        using var scope = NewDisposeScope();
        var projected = Coordinates(keys.t());                                 // [r, n]
        if (_gram is not null) _gram.PlusInPlace(projected.matmul(projected.t()));
        else
        {
            Tensor all, allGram;
            if (_keys is null) (all, allGram) = (projected, projected.t().matmul(projected));
            else
            {
                var cross = _keys.t().matmul(projected);                       // [N, n]
                allGram = cat([cat([_keysGram!, cross], 1), cat([cross.t(), projected.t().matmul(projected)], 1)], 0);
                all = cat([_keys, projected], 1);
            }
            _keys?.Dispose();
            _keysGram?.Dispose();
            (_keys, _keysGram) = (null, null);
            long r = CoordinateDim, count = all.shape[1];
            if (r * count + count * count > r * r) _gram = all.matmul(all.t()).DetachFromDisposeScope();
            else (_keys, _keysGram) = (all.contiguous().DetachFromDisposeScope(), allGram.contiguous().DetachFromDisposeScope());
        }
        HistoryCount += keys.shape[0];
    }

    /// <summary>P K_pK_pᵀ P <c>[d, d]</c> in input space, for checks (the reference keeps K_pK_pᵀ itself as cache_c).</summary>
    public Tensor ProjectedHistory()
    {
        using var scope = NewDisposeScope();
        var g = _gram is not null ? _gram : _keys is not null ? _keys.matmul(_keys.t()) : zeros(CoordinateDim, CoordinateDim);
        if (Kept == 0) g = zeros(Dim, Dim);
        else if (Stored == NullSpaceBasis.Kept) g = _basis.matmul(g).matmul(_basis.t());
        return g.clone().MoveToOuterDisposeScope();
    }

    /// <summary>P <c>[d, d]</c>, dense, for checks.</summary>
    public Tensor Projection()
    {
        using var scope = NewDisposeScope();
        var p = Stored == NullSpaceBasis.Kept ? _basis.matmul(_basis.t()) : eye(Dim).sub(_basis.matmul(_basis.t()));
        return p.MoveToOuterDisposeScope();
    }

    /// <summary>Forgets every earlier edit (a single edit must start from clean state, SPEC §7).</summary>
    public void ResetHistory()
    {
        _keys?.Dispose();
        _keysGram?.Dispose();
        _gram?.Dispose();
        (_keys, _keysGram, _gram, HistoryCount) = (null, null, null, 0);
    }

    public void Dispose()
    {
        ResetHistory();
        _basis.Dispose();
    }
}
