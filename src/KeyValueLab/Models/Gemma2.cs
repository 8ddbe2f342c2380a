using System.Text.Json.Nodes;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using ComponentName = TorchSharp.Utils.ComponentNameAttribute;

namespace KeyValueLab.Models;

// Gemma 2 (Gemma Team 2024) with Hugging Face `model_type: "gemma2"` names: Gemma (√hidden embedding
// scale, (1 + w) RMSNorm, GeGLU, explicit head_dim, tied head) plus
// - a norm after attention and another around the MLP:
//   h = x + post_attention_layernorm(attn(input_layernorm(x)));
//   out = h + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h)));
// - attention scores scaled by query_pre_attn_scalar^-½ (not head_dim^-½) and soft-capped,
//   cap·tanh(s / cap) with cap = attn_logit_softcapping, before the mask;
// - sliding-window attention on alternate layers: `layer_types` when the config lists them, else
//   the even-numbered layers (0, 2, …), as transformers' default;
// - final logits soft-capped with final_logit_softcapping.
// The MLP activation is `hidden_activation` (gelu_pytorch_tanh).

/// <summary>One decoder layer with Gemma 2's four norms.</summary>
internal sealed class Gemma2DecoderLayer : nn.Module<Tensor, AttentionContext, Tensor>
{
    [ComponentName(Name = "input_layernorm")] private readonly LlamaRmsNorm _inputLayernorm;
    [ComponentName(Name = "self_attn")] private readonly LlamaAttention _selfAttn;
    [ComponentName(Name = "post_attention_layernorm")] private readonly LlamaRmsNorm _postAttentionLayernorm;
    [ComponentName(Name = "pre_feedforward_layernorm")] private readonly LlamaRmsNorm _preFeedforwardLayernorm;
    [ComponentName(Name = "mlp")] private readonly LlamaMlp _mlp;
    [ComponentName(Name = "post_feedforward_layernorm")] private readonly LlamaRmsNorm _postFeedforwardLayernorm;

    public Gemma2DecoderLayer(int layer, ModelConfig config, LlamaOptions options, Device? device) : base("layer")
    {
        LlamaRmsNorm Norm() => new(config.HiddenSize, options.RmsNormEps, device, plusOne: true);
        _inputLayernorm = Norm();
        _selfAttn = new LlamaAttention(layer, config, options, device);
        _postAttentionLayernorm = Norm();
        _preFeedforwardLayernorm = Norm();
        _mlp = new LlamaMlp(config, options, device);
        _postFeedforwardLayernorm = Norm();
        RegisterComponents();
    }

    public LlamaMlp Mlp => _mlp;

    public override Tensor forward(Tensor x, AttentionContext ctx)
    {
        var h = x.Plus(_postAttentionLayernorm.call(_selfAttn.call(_inputLayernorm.call(x), ctx)));
        return h.Plus(_postFeedforwardLayernorm.call(_mlp.call(_preFeedforwardLayernorm.call(h))));
    }
}

/// <summary>The body (<c>model.*</c>): <c>embed_tokens</c> (scaled by √hidden), <c>layers</c>, final <c>norm</c>.</summary>
internal sealed class Gemma2Model : nn.Module<Tensor, AttentionContext, Tensor>
{
    [ComponentName(Name = "embed_tokens")] private readonly TokenEmbedding _embedTokens;
    [ComponentName(Name = "layers")] private readonly ModuleList<Gemma2DecoderLayer> _layers;
    [ComponentName(Name = "norm")] private readonly LlamaRmsNorm _norm;
    private readonly Scalar _embedScale;  // held (see HeldScalars)

    public Gemma2Model(ModelConfig config, LlamaOptions options, Device? device) : base("model")
    {
        _embedTokens = new TokenEmbedding(config.VocabSize, config.HiddenSize, device);
        _layers = nn.ModuleList(Enumerable.Range(0, config.NumLayers).Select(i => new Gemma2DecoderLayer(i, config, options, device)).ToArray());
        _norm = new LlamaRmsNorm(config.HiddenSize, options.RmsNormEps, device, plusOne: true);
        _embedScale = LlamaModel.EmbeddingScale(config.HiddenSize).ToScalar();
        RegisterComponents();
    }

    public TokenEmbedding EmbedTokens => _embedTokens;
    public ModuleList<Gemma2DecoderLayer> Layers => _layers;

    public override Tensor forward(Tensor inputIds, AttentionContext ctx)
    {
        var x = _embedTokens.call(inputIds).mul(_embedScale);  // [B, T, C]
        foreach (var layer in _layers) x = layer.call(x, ctx);
        return _norm.call(x);
    }
}

/// <summary>Gemma 2 language model (<c>Gemma2ForCausalLM</c>): <c>model.*</c>; the head is tied unless the config says otherwise.</summary>
public sealed class Gemma2 : CausalLM
{
    public const string ModelType = "gemma2";

    [ComponentName(Name = "model")] private readonly Gemma2Model _model;
    [ComponentName(Name = "lm_head")] private readonly Linear? _lmHead;
    private readonly LlamaOptions _options;
    private readonly Scalar? _finalSoftCap;  // held (see HeldScalars)

    public Gemma2(ModelConfig config, Device? device = null) : base(nameof(Gemma2))
    {
        Config = config;
        var c = new ConfigReader(config.Raw, "config.json");
        _options = Options(c, config.NumLayers);
        if (FinalSoftCap(c) is double cap) _finalSoftCap = cap.ToScalar();
        _model = new Gemma2Model(config, _options, device);
        if (!config.TieWordEmbeddings) _lmHead = Layers.Linear(config.HiddenSize, config.VocabSize, hasBias: false, device);
        RegisterComponents();
    }

    public override ModelConfig Config { get; }

    /// <summary>Parses a Gemma 2 <c>config.json</c> (defaults as in Hugging Face <c>Gemma2Config</c>).</summary>
    public static ModelConfig ParseConfig(JsonObject raw, string source)
    {
        var c = new ConfigReader(raw, source);
        var config = Llama.ParseFamily(c, ModelType, tiedByDefault: true, maxPositionsByDefault: 8192, headDimByDefault: 256);
        _ = Options(c, config.NumLayers);
        _ = FinalSoftCap(c);
        return config;
    }

    internal static LlamaOptions Options(ConfigReader c, int layers)
    {
        double scalar = c.Double("query_pre_attn_scalar", 256);
        c.Require(scalar > 0, $"field \"query_pre_attn_scalar\" must be positive, got {ConfigReader.Format(scalar)}");
        double? cap = SoftCap(c, "attn_logit_softcapping", 50.0);
        int? window = c.Raw.ContainsKey("sliding_window") ? c.OptInt("sliding_window") : 4096;
        c.Require(window is null or > 0, $"field \"sliding_window\" must be positive or null, got {window}");
        return LlamaOptions.Read(c) with
        {
            Activation = Activations.Parse(c, "hidden_activation", "gelu_pytorch_tanh"),
            NormPlusOne = true,
            ScaleEmbeddings = true,
            ScoreScale = 1.0 / Math.Sqrt(scalar),
            AttentionSoftCap = cap,
            LayerWindows = SlidingWindows.PerLayer(c, layers, window, i => i % 2 == 0),
        };
    }

    private static double? FinalSoftCap(ConfigReader c) => SoftCap(c, "final_logit_softcapping", 30.0);

    /// <summary>A soft-cap field: its default when absent, none when null.</summary>
    private static double? SoftCap(ConfigReader c, string field, double fallback)
    {
        if (!c.Raw.ContainsKey(field)) return fallback;
        if (!c.Has(field)) return null;
        double cap = c.Double(field, fallback);
        c.Require(cap > 0, $"field \"{field}\" must be positive or null, got {ConfigReader.Format(cap)}");
        return cap;
    }

    public override Tensor Hidden(Tensor inputIds, Tensor? attentionMask = null, Tensor? positionIds = null, KvCache? cache = null)
    {
        using var scope = NewDisposeScope();
        var ctx = AttentionContext.Build(inputIds, attentionMask, positionIds, cache, _options.Windows, explicitMask: true);
        (ctx.Cos, ctx.Sin) = HalfRotary.Tables(ctx.Positions, Config.HeadDim, _options.RopeTheta, _options.RopePositionScale);
        return _model.call(inputIds, ctx).MoveToOuterDisposeScope();  // [B, T, C]
    }

    /// <summary>Logits through the tied embedding (or <c>lm_head</c>), soft-capped to cap·tanh(logits / cap).</summary>
    public override Tensor Logits(Tensor hidden)
    {
        var logits = Unembedding.Project(hidden, OutputEmbedding);  // [..., V]
        return _finalSoftCap is null ? logits : logits.div(_finalSoftCap).tanh().mul(_finalSoftCap);
    }

    public override Tensor OutputEmbedding => _lmHead?.weight ?? _model.EmbedTokens.weight!;

    internal override nn.Module<Tensor, AttentionContext, Tensor> Block(int layer) => _model.Layers[CheckLayer(layer)];

    public override FfnParts Ffn(int layer)
    {
        var mlp = _model.Layers[CheckLayer(layer)].Mlp;
        return new FfnParts($"model.layers.{layer}.mlp",
            new Dictionary<string, Linear> { ["gate_proj"] = mlp.GateProj, ["up_proj"] = mlp.UpProj }, "down_proj", mlp.DownProj);
    }
}
