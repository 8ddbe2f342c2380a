using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace KeyValueLab.Models;

/// <summary>
/// What every architecture (one file each, named after its Hugging Face <c>model_type</c>) exposes to
/// inference, editing and tuning. Parameters keep the Hugging Face state-dict names, with every
/// linear weight stored as <c>[out, in]</c> (GPT-2's Conv1D weights are transposed at load).
/// </summary>
public abstract class CausalLM : nn.Module
{
    protected CausalLM(string name) : base(name) { }

    /// <summary>The model's configuration as read from <c>config.json</c> (or synthesised for llama2.c files).</summary>
    public abstract ModelConfig Config { get; }

    /// <summary>
    /// Recompute each decoder layer in the backward pass instead of keeping its activations (<see cref="LayerCheckpoint"/>):
    /// a training step then holds one layer's activations at a time. Only architectures that return true from
    /// <see cref="SupportsGradientCheckpointing"/> honour it; setting it on another one throws.
    /// </summary>
    public bool GradientCheckpointing
    {
        get => _gradientCheckpointing;
        set
        {
            if (value && !SupportsGradientCheckpointing) throw new NotSupportedException($"{Config.ModelType} models have no gradient checkpointing");
            _gradientCheckpointing = value;
        }
    }

    private bool _gradientCheckpointing;

    /// <summary>Whether the architecture's layer loop honours <see cref="GradientCheckpointing"/>.</summary>
    public virtual bool SupportsGradientCheckpointing => false;

    /// <summary>Generators (besides torch's global one) whose state a checkpointed layer restores before it is recomputed, so that dropout draws the same masks twice (LoRA's <see cref="Tuning.LoraModel.DropoutGenerator"/>).</summary>
    internal List<Generator> CheckpointGenerators { get; } = [];

    /// <summary>
    /// Logits <c>[B, T, vocab]</c> (fp32) for <paramref name="inputIds"/> <c>[B, T]</c> (int64).
    /// <paramref name="attentionMask"/> <c>[B, T_past + T]</c> is 1 for real tokens and 0 for padding
    /// (right or left padding); <paramref name="positionIds"/> <c>[B, T]</c> defaults to the number of real
    /// tokens before each token when a mask is given (so left-padded rows start at position 0, as in
    /// Hugging Face generation), else to <c>cache.Length + 0..T-1</c>; both agree when nothing is padded.
    /// With a cache, keys and values of these tokens are appended to it.
    /// </summary>
    public virtual Tensor Forward(Tensor inputIds, Tensor? attentionMask = null, Tensor? positionIds = null, KvCache? cache = null)
    {
        using var scope = NewDisposeScope();
        return Logits(Hidden(inputIds, attentionMask, positionIds, cache)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Final hidden states <c>[B, T, C]</c> (after the last norm), with the same arguments as <see cref="Forward"/>;
    /// <c>Forward = Logits(Hidden(...))</c>. Generation can unembed only the last position.
    /// </summary>
    public abstract Tensor Hidden(Tensor inputIds, Tensor? attentionMask = null, Tensor? positionIds = null, KvCache? cache = null);

    /// <summary>
    /// The unembedding alone: logits <c>[..., vocab]</c> for vectors <c>[..., C]</c> (no final norm applied),
    /// e.g. for the last position of <see cref="Hidden"/>, or for value vectors as in Geva et al. 2022.
    /// </summary>
    public abstract Tensor Logits(Tensor hidden);

    /// <summary>The unembedding matrix <c>[vocab, C]</c> that <see cref="Logits"/> multiplies by: <c>lm_head.weight</c>, or the tied input embedding.</summary>
    public abstract Tensor OutputEmbedding { get; }

    /// <summary>The device the model's parameters are on: where the tensors that feed it are created.</summary>
    public Device Device => OutputEmbedding.device;

    /// <summary>
    /// The linear module whose weight is <see cref="OutputEmbedding"/> (<c>lm_head</c>, GPT-NeoX's <c>embed_out</c>), or
    /// null when the head is tied to the input embedding. It stays a plain fp32 matrix: the unembedding multiplies by it
    /// directly (sliced, <see cref="Unembedding.Project"/>), never through the module's call, so neither NF4 nor a
    /// narrow stored dtype may replace it.
    /// </summary>
    public string? UnembeddingModule
    {
        get
        {
            var head = OutputEmbedding.Handle;
            return named_modules().FirstOrDefault(m => m.module is Linear l && l.weight is { } w && w.Handle == head).name;
        }
    }

    /// <summary>The feed-forward block of one layer: its key matrices and value matrix.</summary>
    public abstract FfnParts Ffn(int layer);

    /// <summary>
    /// The transformer block of one layer (<c>transformer.h.{layer}</c> or <c>model.layers.{layer}</c>): it maps the
    /// residual stream <c>[B, T, C]</c> before the layer to the one after, so forward hooks on it read or
    /// change the hidden state of that layer (as ROME and MEMIT need). Tensors a hook creates belong to the
    /// dispose scope of the forward pass: call <c>DetachFromDisposeScope()</c> on those kept afterwards.
    /// </summary>
    internal abstract nn.Module<Tensor, AttentionContext, Tensor> Block(int layer);

    /// <summary>A new, empty key/value cache for incremental decoding.</summary>
    public KvCache NewCache() => new(Config.NumLayers);

    /// <summary>True for parameters the checkpoint stores transposed (GPT-2's Conv1D <c>[in, out]</c> weights).</summary>
    internal virtual bool IsStoredTransposed(string parameterName) => false;

    /// <summary>Returns <paramref name="layer"/> or throws when it is not a layer of this model.</summary>
    protected int CheckLayer(int layer) =>
        layer >= 0 && layer < Config.NumLayers ? layer
        : throw new ArgumentOutOfRangeException(nameof(layer), layer, $"the model has layers 0..{Config.NumLayers - 1}");
}

/// <summary>
/// The linear modules of one FFN block, by their Hugging Face names. Keys: GPT-2 <c>c_fc</c>, GPT-J
/// <c>fc_in</c>, GPT-NeoX <c>dense_h_to_4h</c>, Llama-family <c>gate_proj</c> and <c>up_proj</c> (Phi-3: the two
/// halves of <c>gate_up_proj</c>); value: <c>c_proj</c>, <c>fc_out</c>, <c>dense_4h_to_h</c>, <c>down_proj</c>.
/// <paramref name="Prefix"/> is the state-dict prefix of the block, e.g. <c>transformer.h.3.mlp</c>.
/// The memory coefficients f(h·Kᵀ) are exactly the input of <paramref name="Value"/>.
/// </summary>
public sealed record FfnParts(string Prefix, IReadOnlyDictionary<string, Linear> Keys, string ValueName, Linear Value)
{
    /// <summary>
    /// For keys whose weight is rows of a fused parameter: the state-dict name of that parameter (after
    /// <see cref="Prefix"/>), e.g. Phi-3's <c>gate_proj</c> → <c>gate_up_proj.weight</c>. Other keys are <c>{name}.weight</c>.
    /// </summary>
    public IReadOnlyDictionary<string, string> KeyWeights { get; init; } = new Dictionary<string, string>();

    /// <summary>The state-dict name (after <see cref="Prefix"/>) of the parameter holding key <paramref name="name"/>'s weight.</summary>
    public string KeyWeightName(string name) => KeyWeights.TryGetValue(name, out var fused) ? fused : $"{name}.weight";
}

/// <summary>Per-layer attention keys and values <c>[B, kv_heads, T, head_dim]</c> kept across decoding steps.</summary>
public sealed class KvCache(int layers) : IDisposable
{
    private readonly Tensor?[] _k = new Tensor?[layers], _v = new Tensor?[layers];

    /// <summary>Number of positions cached so far.</summary>
    public long Length => _k[0]?.shape[2] ?? 0;

    /// <summary>Appends this step's keys/values for a layer and returns the full (past + new) tensors.</summary>
    public (Tensor K, Tensor V) Append(int layer, Tensor k, Tensor v)
    {
        var (oldK, oldV) = (_k[layer], _v[layer]);
        var newK = oldK is null ? k.detach().clone() : cat([oldK, k.detach()], 2);
        var newV = oldV is null ? v.detach().clone() : cat([oldV, v.detach()], 2);
        newK.DetachFromDisposeScope();
        newV.DetachFromDisposeScope();
        oldK?.Dispose();
        oldV?.Dispose();
        (_k[layer], _v[layer]) = (newK, newV);
        return (newK, newV);
    }

    public void Dispose()
    {
        for (int i = 0; i < _k.Length; i++) { _k[i]?.Dispose(); _v[i]?.Dispose(); _k[i] = _v[i] = null; }
    }
}
