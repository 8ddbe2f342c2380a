using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Models;

/// <summary>
/// What every attention layer of one forward pass shares: which keys each query may see (causal order,
/// padding), the position of every token, the rotary tables of the architecture, and the cache.
/// Built once per <see cref="CausalLM.Forward"/>; its tensors live in that call's dispose scope.
/// </summary>
internal sealed class AttentionContext
{
    /// <summary>Batch size and number of new tokens.</summary>
    public long Batch { get; }
    public long Length { get; }

    /// <summary>Positions already in <see cref="Cache"/> before this call.</summary>
    public long Past { get; }

    /// <summary>Position of each new token <c>[B, T]</c> (int64).</summary>
    public Tensor Positions { get; }

    /// <summary>Additive mask <c>[B or 1, 1, T, Past + T]</c> (0 where allowed, the float minimum where not); null when <see cref="IsCausal"/> or no mask is needed.</summary>
    public Tensor? Mask { get; }

    /// <summary>True when plain causal attention over the new tokens alone is exact (no cache, no padding).</summary>
    public bool IsCausal { get; }

    /// <summary>
    /// Masks for sliding-window layers by window size W: query t sees keys t−W+1..t (W keys, itself included;
    /// transformers' <c>sliding_window_overlay</c>, <c>kv_idx &gt; q_idx − W</c>), on top of <see cref="Mask"/>.
    /// A window that covers every key in this call is not listed: such layers use <see cref="Mask"/>.
    /// </summary>
    private readonly Dictionary<int, Tensor> _windowMasks;

    public KvCache? Cache { get; }

    /// <summary>Rotary tables <c>[B, 1, T, rotary dims]</c> set by rotary architectures (GPT-J, Llama).</summary>
    public Tensor? Cos { get; internal set; }
    public Tensor? Sin { get; internal set; }

    private AttentionContext(long batch, long length, long past, Tensor positions, Tensor? mask, bool isCausal, KvCache? cache, Dictionary<int, Tensor> windowMasks)
    {
        (Batch, Length, Past, Positions, Mask, IsCausal, Cache, _windowMasks) = (batch, length, past, positions, mask, isCausal, cache, windowMasks);
    }

    /// <summary>
    /// Checks the shapes of the forward inputs and derives the mask and positions. Without
    /// <paramref name="positionIds"/>, positions come from the attention mask (count of real tokens
    /// before each one, as Hugging Face generation does, so left padding works) or else
    /// run <c>Past .. Past+T-1</c>. <paramref name="slidingWindows"/> lists the window sizes of the model's
    /// sliding-window layers (Mistral, Gemma 2); <paramref name="explicitMask"/> builds <see cref="Mask"/> even
    /// where plain causal attention would do (attention computed by hand, as with Gemma 2's soft-capping).
    /// </summary>
    public static AttentionContext Build(Tensor inputIds, Tensor? attentionMask, Tensor? positionIds, KvCache? cache,
        IReadOnlyCollection<int>? slidingWindows = null, bool explicitMask = false)
    {
        if (inputIds.dim() != 2 || inputIds.dtype != ScalarType.Int64)
            throw new ArgumentException($"inputIds must be int64 [batch, tokens], got {inputIds.dtype} [{string.Join(", ", inputIds.shape)}]");
        long batch = inputIds.shape[0], length = inputIds.shape[1], past = cache?.Length ?? 0, total = past + length;
        if (length == 0) throw new ArgumentException("inputIds has no tokens");
        if (attentionMask is not null && (attentionMask.dim() != 2 || attentionMask.shape[0] != batch || attentionMask.shape[1] != total))
            throw new ArgumentException($"attentionMask must be [batch, past + tokens] = [{batch}, {total}], got [{string.Join(", ", attentionMask.shape)}]");
        if (positionIds is not null && (positionIds.dim() != 2 || positionIds.shape[0] != batch || positionIds.shape[1] != length))
            throw new ArgumentException($"positionIds must be [batch, tokens] = [{batch}, {length}], got [{string.Join(", ", positionIds.shape)}]");

        var device = inputIds.device;
        // Built on every forward: Scalars are held until the ops return (see HeldScalars).
        using Scalar zero = 0L, one = 1L, lowest = float.MinValue;
        Tensor positions;
        if (positionIds is not null) positions = positionIds.to(ScalarType.Int64);
        else if (attentionMask is not null)
            positions = attentionMask.to(ScalarType.Int64).cumsum(1).sub(one).clamp_min(zero).narrow(1, past, length);
        else positions = HeldScalars.Arange(past, total, 1, ScalarType.Int64, device).unsqueeze(0).expand(batch, length);

        Tensor? mask = null;
        var windows = (slidingWindows ?? []).Where(w => w < total).Distinct().ToList();
        bool isCausal = attentionMask is null && past == 0 && !explicitMask;
        var windowMasks = new Dictionary<int, Tensor>();
        // One new token without padding sees every key: no mask unless attention is computed by hand.
        bool needMask = !isCausal && (explicitMask || !(attentionMask is null && length == 1));
        if (needMask || windows.Count > 0)
        {
            var queryAt = HeldScalars.Arange(past, total, 1, ScalarType.Int64, device).unsqueeze(1);  // [T, 1]
            var keyAt = HeldScalars.Arange(0, total, 1, ScalarType.Int64, device).unsqueeze(0);      // [1, Tk]
            var allowed = keyAt.le(queryAt).unsqueeze(0).unsqueeze(0);                                 // [1, 1, T, Tk]
            if (attentionMask is not null)
                allowed = allowed.bitwise_and(attentionMask.ne(zero).unsqueeze(1).unsqueeze(1));          // [B, 1, T, Tk]
            // Boolean masks combine with bitwise_and/bitwise_not (the same bits as logical_and/logical_not, which have no
            // meta kernel). The float minimum rather than -inf: a query that sees nothing (a left-pad position) gets a
            // uniform average instead of NaN, and its output is never used.
            if (needMask)
                mask = zeros(allowed.shape, ScalarType.Float32, device).masked_fill(allowed.bitwise_not(), lowest);
            foreach (int w in windows)
            {
                var queryAtMinusW = HeldScalars.Arange(past - w, total - w, 1, ScalarType.Int64, device).unsqueeze(1);  // [T, 1]
                var inWindow = keyAt.gt(queryAtMinusW).unsqueeze(0).unsqueeze(0);                                     // [1, 1, T, Tk]
                var allowedW = allowed.bitwise_and(inWindow);
                windowMasks[w] = zeros(allowedW.shape, ScalarType.Float32, device).masked_fill(allowedW.bitwise_not(), lowest);
            }
        }
        return new AttentionContext(batch, length, past, positions, mask, isCausal, cache, windowMasks);
    }

    /// <summary>
    /// Takes this context's tensors out of every dispose scope, for layers recomputed in the backward pass
    /// (<see cref="LayerCheckpoint"/>), which runs after the forward pass's scopes are gone: the garbage collector frees them
    /// with the graph that refers to them (a few small tensors per step).
    /// </summary>
    public AttentionContext KeepForBackward()
    {
        foreach (var t in new[] { Positions, Mask, Cos, Sin }.Concat(_windowMasks.Values)) t?.DetachFromDisposeScope();
        return this;
    }

    /// <summary>The additive mask for a layer with sliding window <paramref name="window"/> (null: full attention), or null for plain causal attention.</summary>
    public Tensor? MaskFor(int? window) => window is int w && _windowMasks.TryGetValue(w, out var m) ? m : Mask;

    /// <summary>
    /// Scaled dot-product attention of <paramref name="q"/> <c>[B, H, T, d]</c> over <paramref name="k"/>,
    /// <paramref name="v"/> <c>[B, H_kv, Tk, d]</c>; key/value heads are repeated for grouped-query attention.
    /// Returns <c>[B, H, T, d]</c>. <paramref name="window"/> is the layer's sliding window, if any.
    /// </summary>
    public Tensor Attend(Tensor q, Tensor k, Tensor v, int? window = null)
    {
        (k, v) = RepeatKv(q, k, v);
        var mask = MaskFor(window);
        return MetaDevice.Attention(q, k, v, mask?.to(q.dtype), isCausal: mask is null && IsCausal);
    }

    /// <summary>
    /// Attention computed by hand, as Gemma 2 does: scores q·kᵀ·<paramref name="scale"/>, soft-capped to
    /// cap·tanh(scores / cap) when <paramref name="softCap"/> is set, then masked (causal, padding, window) and
    /// soft-maxed in fp32. Needs a context built with <c>explicitMask</c>. Returns <c>[B, H, T, d]</c>.
    /// </summary>
    public Tensor AttendSoftCapped(Tensor q, Tensor k, Tensor v, Scalar scale, Scalar? softCap, int? window = null)
    {
        (k, v) = RepeatKv(q, k, v);
        var mask = MaskFor(window) ?? throw new InvalidOperationException("AttendSoftCapped needs a context built with explicitMask");
        var scores = q.matmul(k.transpose(-2, -1)).mul(scale);                   // [B, H, T, Tk]
        if (softCap is not null) scores = scores.div(softCap).tanh().mul(softCap);
        var weights = nn.functional.softmax(scores.to(ScalarType.Float32).Plus(mask), -1).to(q.dtype);
        return weights.matmul(v);
    }

    private static (Tensor K, Tensor V) RepeatKv(Tensor q, Tensor k, Tensor v)
    {
        long heads = q.shape[1], kvHeads = k.shape[1];
        if (heads != kvHeads)
        {
            // TorchSharp's scaled_dot_product_attention has no GQA flag: each key/value head serves
            // heads / kvHeads consecutive query heads (as Hugging Face's repeat_kv).
            k = k.repeat_interleave(heads / kvHeads, dim: 1);  // [B, H, Tk, d]
            v = v.repeat_interleave(heads / kvHeads, dim: 1);
        }
        return (k, v);
    }
}
