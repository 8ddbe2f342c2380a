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

/// <summary>Rotary tables and rotation for the Hugging Face Llama (rotate-half) layout.</summary>
internal static class HalfRotary
{
    /// <summary>cos and sin <c>[B, 1, T, d]</c>: angles for features i and i + d/2 are the same.</summary>
    public static (Tensor Cos, Tensor Sin) Tables(Tensor positions, int headDim, double theta, double positionScale)
    {
        using Scalar dims = (long)headDim, scale = positionScale;  // held (see HeldScalars): runs every forward
        var invFreq = pow(tensor(theta, ScalarType.Float64, positions.device), HeldScalars.Arange(0, headDim, 2, ScalarType.Float64, positions.device).neg().div(dims));  // [d/2]
        var angles = positions.to(ScalarType.Float64).div(scale).unsqueeze(-1) * invFreq;                                      // [B, T, d/2]
        var both = cat([angles, angles], dim: -1);                                                                         // [B, T, d]
        return (both.cos().to(ScalarType.Float32).unsqueeze(1), both.sin().to(ScalarType.Float32).unsqueeze(1));
    }

    /// <summary>x·cos + rotate_half(x)·sin for <paramref name="x"/> <c>[B, H, T, d]</c>, rotate_half(x) = (−x₂, x₁).</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        long half = x.shape[^1] / 2;
        var rotated = cat([-x.narrow(-1, half, half), x.narrow(-1, 0, half)], dim: -1);
        return (x * cos.to(x.dtype)).Plus(rotated * sin.to(x.dtype));
    }
}

/// <summary>Root-mean-square normalisation with a learned scale <c>weight</c> [C], computed in fp32.</summary>
public sealed class LlamaRmsNorm : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "weight")] private readonly Parameter _weight;
    private readonly Scalar _eps;  // held for the module's life (see HeldScalars)

    public LlamaRmsNorm(long size, double eps, Device? device) : base("norm")
    {
        _weight = new Parameter(ones(size, ScalarType.Float32, device));
        _eps = eps.ToScalar();
        RegisterComponents();
    }

    public Parameter weight => _weight;

    public override Tensor forward(Tensor x)
    {
        var x32 = x.to(ScalarType.Float32);
        // pow(Two) is TorchSharp's square() (same forward and backward) without its temporary Scalar.
        var normed = x32 * rsqrt(x32.pow(HeldScalars.Two).mean([-1L], keepdim: true).add(_eps, HeldScalars.One));  // [B, T, C]
        return _weight * normed.to(x.dtype);
    }
}

/// <summary>Grouped-query self-attention: <c>q_proj</c> [H·d, C], <c>k_proj</c>/<c>v_proj</c> [H_kv·d, C], <c>o_proj</c> [C, H·d].</summary>
public sealed class LlamaAttention : nn.Module<Tensor, AttentionContext, Tensor>
{
    [ComponentName(Name = "q_proj")] private readonly Linear _qProj;
    [ComponentName(Name = "k_proj")] private readonly Linear _kProj;
    [ComponentName(Name = "v_proj")] private readonly Linear _vProj;
    [ComponentName(Name = "o_proj")] private readonly Linear _oProj;
    private readonly int _layer, _heads, _kvHeads, _headDim;

    public LlamaAttention(int layer, ModelConfig config, LlamaOptions options, Device? device) : base("self_attn")
    {
        (_layer, _heads, _kvHeads, _headDim) = (layer, config.NumHeads, config.NumKvHeads, config.HeadDim);
        long c = config.HiddenSize;
        _qProj = Layers.Linear(c, (long)_heads * _headDim, hasBias: options.AttentionBias, device);
        _kProj = Layers.Linear(c, (long)_kvHeads * _headDim, hasBias: options.AttentionBias, device);
        _vProj = Layers.Linear(c, (long)_kvHeads * _headDim, hasBias: options.AttentionBias, device);
        _oProj = Layers.Linear((long)_heads * _headDim, c, hasBias: options.AttentionBias, device);
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
        var y = ctx.Attend(q, k, v).transpose(1, 2).reshape(b, t, (long)_heads * _headDim);  // [B, T, H·d]
        return _oProj.call(y);
    }
}

/// <summary>SwiGLU feed-forward memory: keys <c>gate_proj</c> and <c>up_proj</c> [inner, C], values <c>down_proj</c> [C, inner].</summary>
public sealed class LlamaMlp : nn.Module<Tensor, Tensor>
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
public sealed class LlamaDecoderLayer : nn.Module<Tensor, AttentionContext, Tensor>
{
    [ComponentName(Name = "input_layernorm")] private readonly LlamaRmsNorm _inputLayernorm;
    [ComponentName(Name = "self_attn")] private readonly LlamaAttention _selfAttn;
    [ComponentName(Name = "post_attention_layernorm")] private readonly LlamaRmsNorm _postAttentionLayernorm;
    [ComponentName(Name = "mlp")] private readonly LlamaMlp _mlp;

    public LlamaDecoderLayer(int layer, ModelConfig config, LlamaOptions options, Device? device) : base("layer")
    {
        _inputLayernorm = new LlamaRmsNorm(config.HiddenSize, options.RmsNormEps, device);
        _selfAttn = new LlamaAttention(layer, config, options, device);
        _postAttentionLayernorm = new LlamaRmsNorm(config.HiddenSize, options.RmsNormEps, device);
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
public sealed class LlamaModel : nn.Module<Tensor, AttentionContext, Tensor>
{
    [ComponentName(Name = "embed_tokens")] private readonly TokenEmbedding _embedTokens;
    [ComponentName(Name = "layers")] private readonly ModuleList<LlamaDecoderLayer> _layers;
    [ComponentName(Name = "norm")] private readonly LlamaRmsNorm _norm;

    public LlamaModel(ModelConfig config, LlamaOptions options, Device? device) : base("model")
    {
        _embedTokens = new TokenEmbedding(config.VocabSize, config.HiddenSize, device);
        _layers = nn.ModuleList(Enumerable.Range(0, config.NumLayers).Select(i => new LlamaDecoderLayer(i, config, options, device)).ToArray());
        _norm = new LlamaRmsNorm(config.HiddenSize, options.RmsNormEps, device);
        RegisterComponents();
    }

    public TokenEmbedding EmbedTokens => _embedTokens;
    public ModuleList<LlamaDecoderLayer> Layers => _layers;

    public override Tensor forward(Tensor inputIds, AttentionContext ctx)
    {
        var x = _embedTokens.call(inputIds);  // [B, T, C]
        foreach (var layer in _layers) x = layer.call(x, ctx);
        return _norm.call(x);
    }
}

/// <summary>Llama settings beyond <see cref="ModelConfig"/>, read from <c>config.json</c>.</summary>
public sealed record LlamaOptions(double RmsNormEps, double RopeTheta, double RopePositionScale, Func<Tensor, Tensor> Activation, bool AttentionBias, bool MlpBias)
{
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
        return new(c.Double("rms_norm_eps", 1e-6), c.Double("rope_theta", 10000.0), scale,
            Activations.Parse(c, "hidden_act", "silu"), c.Bool("attention_bias", false), c.Bool("mlp_bias", false));
    }
}

/// <summary>Llama language model (<c>LlamaForCausalLM</c>): <c>model.*</c> and, only when untied, <c>lm_head.weight</c>.</summary>
public sealed class Llama : CausalLM
{
    public const string ModelType = "llama";

    [ComponentName(Name = "model")] private readonly LlamaModel _model;
    [ComponentName(Name = "lm_head")] private readonly Linear? _lmHead;
    private readonly LlamaOptions _options;

    public Llama(ModelConfig config, Device? device = null) : base(nameof(Llama))
    {
        Config = config;
        _options = LlamaOptions.Read(new ConfigReader(config.Raw, "config.json"));
        _model = new LlamaModel(config, _options, device);
        if (!config.TieWordEmbeddings) _lmHead = Layers.Linear(config.HiddenSize, config.VocabSize, hasBias: false, device);
        RegisterComponents();
    }

    public override ModelConfig Config { get; }
    public LlamaModel Model => _model;

    /// <summary>Parses a Llama <c>config.json</c> (defaults as in Hugging Face <c>LlamaConfig</c>).</summary>
    public static ModelConfig ParseConfig(JsonObject raw, string source)
    {
        var c = new ConfigReader(raw, source);
        int hidden = c.Positive("hidden_size"), heads = c.Positive("num_attention_heads");
        int kvHeads = c.OptPositive("num_key_value_heads", heads);
        c.Require(heads % kvHeads == 0, $"num_attention_heads {heads} is not a multiple of num_key_value_heads {kvHeads}");
        int headDim = c.OptPositive("head_dim", hidden / heads);
        c.Require(c.Has("head_dim") || hidden % heads == 0, $"hidden_size {hidden} is not a multiple of num_attention_heads {heads}");
        c.Require(headDim % 2 == 0, $"head size {headDim} must be even for rotary embeddings");
        _ = LlamaOptions.Read(c);
        return new ModelConfig
        {
            ModelType = ModelType,
            VocabSize = c.Positive("vocab_size"),
            HiddenSize = hidden,
            NumLayers = c.Positive("num_hidden_layers"),
            NumHeads = heads,
            NumKvHeads = kvHeads,
            HeadDim = headDim,
            IntermediateSize = c.Positive("intermediate_size"),
            MaxPositions = c.OptPositive("max_position_embeddings", 2048),
            TieWordEmbeddings = c.Bool("tie_word_embeddings", false),
            BosTokenId = c.TokenId("bos_token_id"),
            EosTokenId = c.TokenId("eos_token_id"),
            Raw = raw,
        };
    }

    public override Tensor Hidden(Tensor inputIds, Tensor? attentionMask = null, Tensor? positionIds = null, KvCache? cache = null)
    {
        using var scope = NewDisposeScope();
        var ctx = AttentionContext.Build(inputIds, attentionMask, positionIds, cache);
        (ctx.Cos, ctx.Sin) = HalfRotary.Tables(ctx.Positions, Config.HeadDim, _options.RopeTheta, _options.RopePositionScale);
        return _model.call(inputIds, ctx).MoveToOuterDisposeScope();  // [B, T, C]
    }

    /// <summary>Logits through <c>lm_head</c>, or the tied token embedding.</summary>
    public override Tensor Logits(Tensor hidden) =>
        Unembedding.Project(hidden, OutputEmbedding, _lmHead?.bias);  // [..., V]

    public override Tensor OutputEmbedding => _lmHead?.weight ?? _model.EmbedTokens.weight!;

    public override nn.Module<Tensor, AttentionContext, Tensor> Block(int layer) => _model.Layers[CheckLayer(layer)];

    public override FfnParts Ffn(int layer)
    {
        var mlp = _model.Layers[CheckLayer(layer)].Mlp;
        return new FfnParts($"model.layers.{layer}.mlp",
            new Dictionary<string, Linear> { ["gate_proj"] = mlp.GateProj, ["up_proj"] = mlp.UpProj }, "down_proj", mlp.DownProj);
    }
}
