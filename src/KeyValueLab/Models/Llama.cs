using System.Text.Json.Nodes;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using ComponentName = TorchSharp.Utils.ComponentNameAttribute;

namespace KeyValueLab.Models;

// Llama (Touvron et al. 2023) with Hugging Face `model_type: "llama"` names: RMSNorm, rotary
// embeddings rotating HALVES of each head (x_i with x_{i+d/2}; Hugging Face permutes Meta's q/k
// rows at conversion so this equals Meta's interleaved pairs), SwiGLU MLP down(act(gate(x))·up(x)),
// grouped-query attention (num_key_value_heads ≤ num_attention_heads), tied or untied lm_head.
// Qwen2, Mistral and Gemma are this body with other options (LlamaOptions), as transformers'
// modular_qwen2.py, modular_mistral.py and modular_gemma.py derive them from Llama; Gemma 2 and Phi-3
// reuse its parts.

/// <summary>Rotary tables and rotation for the Hugging Face Llama (rotate-half) layout.</summary>
internal static class HalfRotary
{
    /// <summary>
    /// cos and sin <c>[B, 1, T, rot]</c> for a rotary width <paramref name="rotaryDim"/> (the head size, or
    /// less for partial rotary): angles for features i and i + rot/2 are the same, inv_freq = θ^(−2i/rot).
    /// </summary>
    public static (Tensor Cos, Tensor Sin) Tables(Tensor positions, int rotaryDim, double theta, double positionScale)
    {
        using Scalar dims = (long)rotaryDim, scale = positionScale;  // held (see HeldScalars): runs every forward
        var invFreq = pow(tensor(theta, ScalarType.Float64, positions.device), HeldScalars.Arange(0, rotaryDim, 2, ScalarType.Float64, positions.device).neg().div(dims));  // [rot/2]
        var angles = positions.to(ScalarType.Float64).div(scale).unsqueeze(-1) * invFreq;                                      // [B, T, d/2]
        var both = cat([angles, angles], dim: -1);                                                                         // [B, T, d]
        return (both.cos().to(ScalarType.Float32).unsqueeze(1), both.sin().to(ScalarType.Float32).unsqueeze(1));
    }

    /// <summary>
    /// x·cos + rotate_half(x)·sin for <paramref name="x"/> <c>[B, H, T, d]</c>, rotate_half(x) = (−x₂, x₁), on the
    /// first rot = cos.shape[-1] features; the rest pass through (partial rotary: GPT-NeoX, Phi-3).
    /// </summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        long rot = cos.shape[^1], d = x.shape[^1], half = rot / 2;
        var xr = rot == d ? x : x.narrow(-1, 0, rot);
        var rotated = cat([-xr.narrow(-1, half, half), xr.narrow(-1, 0, half)], dim: -1);
        var y = (xr * cos.to(x.dtype)).Plus(rotated * sin.to(x.dtype));
        return rot == d ? y : cat([y, x.narrow(-1, rot, d - rot)], dim: -1);
    }
}

/// <summary>
/// Root-mean-square normalisation with a learned scale <c>weight</c> [C], computed in fp32. Gemma's variant
/// (<c>plusOne</c>) scales by (1 + weight), so its neutral weight is 0.
/// </summary>
internal sealed class LlamaRmsNorm : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "weight")] private readonly Parameter _weight;
    private readonly Scalar _eps;  // held for the module's life (see HeldScalars)
    private readonly bool _plusOne;

    public LlamaRmsNorm(long size, double eps, Device? device, bool plusOne = false) : base("norm")
    {
        _plusOne = plusOne;
        _weight = new Parameter(plusOne ? zeros(size, ScalarType.Float32, device) : ones(size, ScalarType.Float32, device));
        _eps = eps.ToScalar();
        RegisterComponents();
    }

    public Parameter weight => _weight;

    public override Tensor forward(Tensor x)
    {
        var x32 = x.to(ScalarType.Float32);
        // pow(Two) is TorchSharp's square() (same forward and backward) without its temporary Scalar.
        var normed = x32 * rsqrt(x32.pow(HeldScalars.Two).mean([-1L], keepdim: true).add(_eps, HeldScalars.One));  // [B, T, C]
        return _plusOne ? (normed * _weight.add(HeldScalars.One, HeldScalars.One)).to(x.dtype) : _weight * normed.to(x.dtype);
    }
}

/// <summary>
/// Grouped-query self-attention: <c>q_proj</c> [H·d, C], <c>k_proj</c>/<c>v_proj</c> [H_kv·d, C], <c>o_proj</c> [C, H·d];
/// a sliding window on the layers that have one (Mistral, Qwen2, Gemma 2); Gemma 2's own score scale and soft-capping.
/// </summary>
internal sealed class LlamaAttention : nn.Module<Tensor, AttentionContext, Tensor>
{
    [ComponentName(Name = "q_proj")] private readonly Linear _qProj;
    [ComponentName(Name = "k_proj")] private readonly Linear _kProj;
    [ComponentName(Name = "v_proj")] private readonly Linear _vProj;
    [ComponentName(Name = "o_proj")] private readonly Linear _oProj;
    private readonly int _layer, _heads, _kvHeads, _headDim;
    private readonly int? _window;
    private readonly Scalar? _scale, _softCap;  // held for the module's life (see HeldScalars)

    public LlamaAttention(int layer, ModelConfig config, LlamaOptions options, Device? device) : base("self_attn")
    {
        (_layer, _heads, _kvHeads, _headDim) = (layer, config.NumHeads, config.NumKvHeads, config.HeadDim);
        _window = options.WindowOf(layer);
        if (options.ScoreScale is double scale) _scale = scale.ToScalar();
        if (options.AttentionSoftCap is double cap) _softCap = cap.ToScalar();
        long c = config.HiddenSize;
        _qProj = Layers.Linear(c, (long)_heads * _headDim, hasBias: options.QkvBias, device);
        _kProj = Layers.Linear(c, (long)_kvHeads * _headDim, hasBias: options.QkvBias, device);
        _vProj = Layers.Linear(c, (long)_kvHeads * _headDim, hasBias: options.QkvBias, device);
        _oProj = Layers.Linear((long)_heads * _headDim, c, hasBias: options.OutputBias, device);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, AttentionContext ctx)
    {
        long b = x.shape[0], t = x.shape[1];
        var q = _qProj.call(x).view(b, t, _heads, _headDim).transpose(1, 2);     // [B, H, T, d]
        var k = _kProj.call(x).view(b, t, _kvHeads, _headDim).transpose(1, 2);   // [B, H_kv, T, d]
        var v = _vProj.call(x).view(b, t, _kvHeads, _headDim).transpose(1, 2);
        q = HalfRotary.Apply(q, ctx.Cos!, ctx.Sin!);
        k = HalfRotary.Apply(k, ctx.Cos!, ctx.Sin!);
        if (ctx.Cache is not null) (k, v) = ctx.Cache.Append(_layer, k, v);      // [B, H_kv, Past+T, d]
        var attended = _scale is null ? ctx.Attend(q, k, v, _window) : ctx.AttendSoftCapped(q, k, v, _scale, _softCap, _window);  // [B, H, T, d]
        var y = attended.transpose(1, 2).reshape(b, t, (long)_heads * _headDim);  // [B, T, H·d]
        return _oProj.call(y);
    }
}

/// <summary>SwiGLU feed-forward memory: keys <c>gate_proj</c> and <c>up_proj</c> [inner, C], values <c>down_proj</c> [C, inner].</summary>
internal sealed class LlamaMlp : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "gate_proj")] private readonly Linear _gateProj;
    [ComponentName(Name = "up_proj")] private readonly Linear _upProj;
    [ComponentName(Name = "down_proj")] private readonly Linear _downProj;
    private readonly Func<Tensor, Tensor> _act;

    public LlamaMlp(ModelConfig config, LlamaOptions options, Device? device) : base("mlp")
    {
        _gateProj = Layers.Linear(config.HiddenSize, config.IntermediateSize, hasBias: options.MlpBias, device);
        _upProj = Layers.Linear(config.HiddenSize, config.IntermediateSize, hasBias: options.MlpBias, device);
        _downProj = Layers.Linear(config.IntermediateSize, config.HiddenSize, hasBias: options.MlpBias, device);
        _act = options.Activation;
        RegisterComponents();
    }

    public Linear GateProj => _gateProj;
    public Linear UpProj => _upProj;
    public Linear DownProj => _downProj;

    public override Tensor forward(Tensor x) => _downProj.call(_act(_gateProj.call(x)) * _upProj.call(x));  // [B, T, inner] → [B, T, C]
}

/// <summary>One decoder layer: x + attn(norm(x)), then + mlp(norm(x)).</summary>
internal sealed class LlamaDecoderLayer : nn.Module<Tensor, AttentionContext, Tensor>
{
    [ComponentName(Name = "input_layernorm")] private readonly LlamaRmsNorm _inputLayernorm;
    [ComponentName(Name = "self_attn")] private readonly LlamaAttention _selfAttn;
    [ComponentName(Name = "post_attention_layernorm")] private readonly LlamaRmsNorm _postAttentionLayernorm;
    [ComponentName(Name = "mlp")] private readonly LlamaMlp _mlp;

    public LlamaDecoderLayer(int layer, ModelConfig config, LlamaOptions options, Device? device) : base("layer")
    {
        _inputLayernorm = new LlamaRmsNorm(config.HiddenSize, options.RmsNormEps, device, options.NormPlusOne);
        _selfAttn = new LlamaAttention(layer, config, options, device);
        _postAttentionLayernorm = new LlamaRmsNorm(config.HiddenSize, options.RmsNormEps, device, options.NormPlusOne);
        _mlp = new LlamaMlp(config, options, device);
        RegisterComponents();
    }

    public LlamaAttention SelfAttn => _selfAttn;
    public LlamaMlp Mlp => _mlp;

    public override Tensor forward(Tensor x, AttentionContext ctx)
    {
        x = x.Plus(_selfAttn.call(_inputLayernorm.call(x), ctx));
        return x.Plus(_mlp.call(_postAttentionLayernorm.call(x)));
    }
}

/// <summary>The body (<c>model.*</c>): <c>embed_tokens</c>, <c>layers</c>, final <c>norm</c>.</summary>
internal sealed class LlamaModel : nn.Module<Tensor, AttentionContext, Tensor>
{
    [ComponentName(Name = "embed_tokens")] private readonly TokenEmbedding _embedTokens;
    [ComponentName(Name = "layers")] private readonly ModuleList<LlamaDecoderLayer> _layers;
    [ComponentName(Name = "norm")] private readonly LlamaRmsNorm _norm;
    private readonly Scalar? _embedScale;  // Gemma: √hidden, held (see HeldScalars)

    public LlamaModel(ModelConfig config, LlamaOptions options, Device? device) : base("model")
    {
        _embedTokens = new TokenEmbedding(config.VocabSize, config.HiddenSize, device);
        _layers = nn.ModuleList(Enumerable.Range(0, config.NumLayers).Select(i => new LlamaDecoderLayer(i, config, options, device)).ToArray());
        _norm = new LlamaRmsNorm(config.HiddenSize, options.RmsNormEps, device, options.NormPlusOne);
        if (options.ScaleEmbeddings) _embedScale = EmbeddingScale(config.HiddenSize).ToScalar();
        RegisterComponents();
    }

    /// <summary>
    /// Gemma's embedding normaliser √hidden, rounded to float32 as transformers does
    /// (<c>torch.tensor(hidden_size**0.5, dtype=hidden_states.dtype)</c>: 5.656854 for 32, not bf16's 5.65625).
    /// </summary>
    internal static float EmbeddingScale(int hidden) => (float)Math.Sqrt(hidden);

    public TokenEmbedding EmbedTokens => _embedTokens;
    public ModuleList<LlamaDecoderLayer> Layers => _layers;

    /// <summary>Set while the owning model checkpoints its layers: the generators to restore before recomputing one (see <see cref="LayerCheckpoint"/>).</summary>
    internal IReadOnlyList<Generator>? Checkpointed { get; set; }

    public override Tensor forward(Tensor inputIds, AttentionContext ctx)
    {
        var x = _embedTokens.call(inputIds);  // [B, T, C]
        if (_embedScale is not null) x = x.mul(_embedScale);
        foreach (var layer in _layers)
            x = Checkpointed is { } generators ? LayerCheckpoint.Apply(h => layer.call(h, ctx), x, generators) : layer.call(x, ctx);
        return _norm.call(x);
    }
}

/// <summary>
/// Llama-family settings beyond <see cref="ModelConfig"/>, read from <c>config.json</c>: Llama's own, and
/// what Qwen2 (q/k/v biases, windows), Mistral (windows), Gemma (norm, embedding scale) and Gemma 2
/// (score scale, soft-capping) change.
/// </summary>
/// <remarks><c>QkvBias</c> and <c>OutputBias</c> are Llama's <c>attention_bias</c> split: Qwen2 has the first, not the second.</remarks>
internal sealed record LlamaOptions(double RmsNormEps, double RopeTheta, double RopePositionScale, Func<Tensor, Tensor> Activation, bool QkvBias, bool OutputBias, bool MlpBias)
{
    /// <summary>Sliding window per layer (null: full causal attention); empty: none anywhere.</summary>
    public IReadOnlyList<int?> LayerWindows { get; init; } = [];

    /// <summary>RMSNorm scales by (1 + weight) (Gemma).</summary>
    public bool NormPlusOne { get; init; }

    /// <summary>Embeddings are multiplied by √hidden (Gemma).</summary>
    public bool ScaleEmbeddings { get; init; }

    /// <summary>Attention scores scaled by this instead of 1/√head_dim (Gemma 2); when set, attention is computed by hand.</summary>
    public double? ScoreScale { get; init; }

    /// <summary>Scores soft-capped to cap·tanh(s/cap) before the mask (Gemma 2).</summary>
    public double? AttentionSoftCap { get; init; }

    /// <summary>The sliding window of <paramref name="layer"/>, or null.</summary>
    public int? WindowOf(int layer) => layer < LayerWindows.Count ? LayerWindows[layer] : null;

    /// <summary>The distinct window sizes, for <see cref="AttentionContext.Build"/>.</summary>
    public IReadOnlyCollection<int> Windows => [.. LayerWindows.OfType<int>().Distinct()];


    internal static LlamaOptions Read(ConfigReader c)
    {
        double scale = 1.0;
        if (c.Raw.TryGetPropertyValue("rope_scaling", out var node) && node is JsonObject scaling)
        {
            var s = new ConfigReader(scaling, c.Source);
            string type = s.OptString("rope_type") ?? s.OptString("type") ?? "default";
            if (type == "linear") scale = s.Double("factor", 1.0);
            else c.Require(type == "default", $"rope_scaling type \"{type}\" is not supported (supported: default, linear)");
        }
        bool attentionBias = c.Bool("attention_bias", false);
        return new(c.Double("rms_norm_eps", 1e-6), c.Double("rope_theta", 10000.0), scale,
            Activations.Parse(c, "hidden_act", "silu"), attentionBias, attentionBias, c.Bool("mlp_bias", false));
    }
}

/// <summary>
/// Llama language model (<c>LlamaForCausalLM</c>): <c>model.*</c> and, only when untied, <c>lm_head.weight</c>.
/// With other <see cref="LlamaOptions"/> it is also Qwen2, Mistral and Gemma (<c>Config.ModelType</c> says which).
/// </summary>
public sealed class Llama : CausalLM
{
    public const string ModelType = "llama";

    [ComponentName(Name = "model")] private readonly LlamaModel _model;
    [ComponentName(Name = "lm_head")] private readonly Linear? _lmHead;
    private readonly LlamaOptions _options;

    public Llama(ModelConfig config, Device? device = null) : this(config, LlamaOptions.Read(new ConfigReader(config.Raw, "config.json")), device) { }

    /// <summary>A Llama-family model with the options of its architecture (Qwen2, Mistral, Gemma).</summary>
    internal Llama(ModelConfig config, LlamaOptions options, Device? device = null) : base(nameof(Llama))
    {
        Config = config;
        _options = options;
        _model = new LlamaModel(config, _options, device);
        if (!config.TieWordEmbeddings) _lmHead = Layers.Linear(config.HiddenSize, config.VocabSize, hasBias: false, device);
        RegisterComponents();
    }

    public override ModelConfig Config { get; }
    internal LlamaModel Model => _model;

    /// <summary>Parses a Llama <c>config.json</c> (defaults as in Hugging Face <c>LlamaConfig</c>).</summary>
    public static ModelConfig ParseConfig(JsonObject raw, string source)
    {
        var c = new ConfigReader(raw, source);
        _ = LlamaOptions.Read(c);
        return ParseFamily(c, ModelType, tiedByDefault: false, maxPositionsByDefault: 2048);
    }

    /// <summary>
    /// The fields every Llama-family config shares (hidden_size, heads, head_dim, …), with the defaults of
    /// that architecture's configuration class where they differ.
    /// </summary>
    internal static ModelConfig ParseFamily(ConfigReader c, string modelType, bool tiedByDefault, int maxPositionsByDefault, int? headDimByDefault = null)
    {
        int hidden = c.Positive("hidden_size"), heads = c.Positive("num_attention_heads");
        int kvHeads = c.OptPositive("num_key_value_heads", heads);
        c.Require(heads % kvHeads == 0, $"num_attention_heads {heads} is not a multiple of num_key_value_heads {kvHeads}");
        int headDim = c.OptPositive("head_dim", headDimByDefault ?? hidden / heads);
        c.Require(c.Has("head_dim") || headDimByDefault is not null || hidden % heads == 0, $"hidden_size {hidden} is not a multiple of num_attention_heads {heads}");
        c.Require(headDim % 2 == 0, $"head size {headDim} must be even for rotary embeddings");
        return new ModelConfig
        {
            ModelType = modelType,
            VocabSize = c.Positive("vocab_size"),
            HiddenSize = hidden,
            NumLayers = c.Positive("num_hidden_layers"),
            NumHeads = heads,
            NumKvHeads = kvHeads,
            HeadDim = headDim,
            IntermediateSize = c.Positive("intermediate_size"),
            MaxPositions = c.OptPositive("max_position_embeddings", maxPositionsByDefault),
            TieWordEmbeddings = c.Bool("tie_word_embeddings", tiedByDefault),
            BosTokenId = c.TokenId("bos_token_id"),
            EosTokenId = c.TokenId("eos_token_id"),
            Raw = c.Raw,
        };
    }

    public override bool SupportsGradientCheckpointing => true;

    public override Tensor Hidden(Tensor inputIds, Tensor? attentionMask = null, Tensor? positionIds = null, KvCache? cache = null)
    {
        using var scope = NewDisposeScope();
        var ctx = Context(inputIds, attentionMask, positionIds, cache);
        // Checkpointed layers run again in the backward pass, after this call: their shared mask and rotary tables must outlive it.
        bool checkpoint = GradientCheckpointing && is_grad_enabled();
        if (checkpoint) ctx.KeepForBackward();
        _model.Checkpointed = checkpoint ? CheckpointGenerators : null;
        try { return _model.call(inputIds, ctx).MoveToOuterDisposeScope(); }  // [B, T, C]
        finally { _model.Checkpointed = null; }
    }

    private AttentionContext Context(Tensor inputIds, Tensor? attentionMask, Tensor? positionIds, KvCache? cache)
    {
        var ctx = AttentionContext.Build(inputIds, attentionMask, positionIds, cache, _options.Windows, explicitMask: _options.ScoreScale is not null);
        (ctx.Cos, ctx.Sin) = HalfRotary.Tables(ctx.Positions, Config.HeadDim, _options.RopeTheta, _options.RopePositionScale);
        return ctx;
    }

    /// <summary>Logits through <c>lm_head</c>, or the tied token embedding.</summary>
    public override Tensor Logits(Tensor hidden) =>
        Unembedding.Project(hidden, OutputEmbedding, _lmHead?.bias);  // [..., V]

    public override Tensor OutputEmbedding => _lmHead?.weight ?? _model.EmbedTokens.weight!;

    internal override nn.Module<Tensor, AttentionContext, Tensor> Block(int layer) => _model.Layers[CheckLayer(layer)];

    public override FfnParts Ffn(int layer)
    {
        var mlp = _model.Layers[CheckLayer(layer)].Mlp;
        return new FfnParts($"model.layers.{layer}.mlp",
            new Dictionary<string, Linear> { ["gate_proj"] = mlp.GateProj, ["up_proj"] = mlp.UpProj }, "down_proj", mlp.DownProj);
    }
}
