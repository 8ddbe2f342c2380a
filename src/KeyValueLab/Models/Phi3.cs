using System.Text.Json.Nodes;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using ComponentName = TorchSharp.Utils.ComponentNameAttribute;

namespace KeyValueLab.Models;

// Phi-3 (Abdin et al. 2024) with Hugging Face `model_type: "phi3"` names: a Llama-style decoder
// (RMSNorm, rotate-half rotary, grouped-query attention, SwiGLU) whose projections are fused. `qkv_proj`
// rows are [q (H·d) | k (H_kv·d) | v (H_kv·d)]; `gate_up_proj` rows are [gate | up] and the MLP is
// down(up · silu(gate)). Rotary covers the first partial_rotary_factor · head_dim features; with
// `sliding_window` set (Phi-3-mini-4k: 2047) every layer attends to that many keys, as transformers' mask does.
// The fused gate_up_proj is a FusedLinear, so the gate and up halves are key matrices of their own for
// editing and tracing (FfnMemory's Gate and Up), while the state dict keeps the one fused weight.

/// <summary>Grouped-query self-attention with the fused <c>qkv_proj</c> [(H + 2·H_kv)·d, C] and <c>o_proj</c> [C, H·d].</summary>
internal sealed class Phi3Attention : nn.Module<Tensor, AttentionContext, Tensor>
{
    [ComponentName(Name = "qkv_proj")] private readonly Linear _qkvProj;
    [ComponentName(Name = "o_proj")] private readonly Linear _oProj;
    private readonly int _layer, _heads, _kvHeads, _headDim;
    private readonly int? _window;

    public Phi3Attention(int layer, ModelConfig config, Phi3Options options, Device? device) : base("self_attn")
    {
        (_layer, _heads, _kvHeads, _headDim, _window) = (layer, config.NumHeads, config.NumKvHeads, config.HeadDim, options.SlidingWindow);
        long c = config.HiddenSize;
        _qkvProj = Layers.Linear(c, (long)(_heads + 2 * _kvHeads) * _headDim, hasBias: false, device);
        _oProj = Layers.Linear((long)_heads * _headDim, c, hasBias: false, device);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, AttentionContext ctx)
    {
        long b = x.shape[0], t = x.shape[1], qRows = (long)_heads * _headDim, kvRows = (long)_kvHeads * _headDim;
        var qkv = _qkvProj.call(x);                                                                  // [B, T, (H + 2·H_kv)·d]
        var q = qkv.narrow(-1, 0, qRows).view(b, t, _heads, _headDim).transpose(1, 2);              // [B, H, T, d]
        var k = qkv.narrow(-1, qRows, kvRows).view(b, t, _kvHeads, _headDim).transpose(1, 2);       // [B, H_kv, T, d]
        var v = qkv.narrow(-1, qRows + kvRows, kvRows).view(b, t, _kvHeads, _headDim).transpose(1, 2);
        q = HalfRotary.Apply(q, ctx.Cos!, ctx.Sin!);
        k = HalfRotary.Apply(k, ctx.Cos!, ctx.Sin!);
        if (ctx.Cache is not null) (k, v) = ctx.Cache.Append(_layer, k, v);                         // [B, H_kv, Past+T, d]
        var y = ctx.Attend(q, k, v, _window).transpose(1, 2).reshape(b, t, qRows);                  // [B, T, H·d]
        return _oProj.call(y);
    }
}

/// <summary>
/// The feed-forward memory: keys the gate and up halves of <c>gate_up_proj</c> [2·inner, C], values <c>down_proj</c> [C, inner].
/// </summary>
internal sealed class Phi3Mlp : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "gate_up_proj")] private readonly FusedLinear _gateUpProj;
    [ComponentName(Name = "down_proj")] private readonly Linear _downProj;
    private readonly Func<Tensor, Tensor> _act;

    public Phi3Mlp(ModelConfig config, Phi3Options options, Device? device) : base("mlp")
    {
        long inner = config.IntermediateSize;
        _gateUpProj = new FusedLinear(config.HiddenSize, [("gate", inner), ("up", inner)], device);
        _downProj = Layers.Linear(inner, config.HiddenSize, hasBias: false, device);
        _act = options.Activation;
        RegisterComponents();
    }

    public FusedLinear GateUpProj => _gateUpProj;
    public Linear Gate => _gateUpProj.Part(0);
    public Linear Up => _gateUpProj.Part(1);
    public Linear DownProj => _downProj;

    public override Tensor forward(Tensor x)
    {
        var gateUp = _gateUpProj.call(x).chunk(2, dim: -1);  // [B, T, inner] each: gate, up
        return _downProj.call(gateUp[1] * _act(gateUp[0]));
    }
}

/// <summary>One decoder layer: x + attn(norm(x)), then + mlp(norm(x)).</summary>
internal sealed class Phi3DecoderLayer : nn.Module<Tensor, AttentionContext, Tensor>
{
    [ComponentName(Name = "self_attn")] private readonly Phi3Attention _selfAttn;
    [ComponentName(Name = "mlp")] private readonly Phi3Mlp _mlp;
    [ComponentName(Name = "input_layernorm")] private readonly LlamaRmsNorm _inputLayernorm;
    [ComponentName(Name = "post_attention_layernorm")] private readonly LlamaRmsNorm _postAttentionLayernorm;

    public Phi3DecoderLayer(int layer, ModelConfig config, Phi3Options options, Device? device) : base("layer")
    {
        _selfAttn = new Phi3Attention(layer, config, options, device);
        _mlp = new Phi3Mlp(config, options, device);
        _inputLayernorm = new LlamaRmsNorm(config.HiddenSize, options.RmsNormEps, device);
        _postAttentionLayernorm = new LlamaRmsNorm(config.HiddenSize, options.RmsNormEps, device);
        RegisterComponents();
    }

    public Phi3Mlp Mlp => _mlp;

    public override Tensor forward(Tensor x, AttentionContext ctx)
    {
        x = x.Plus(_selfAttn.call(_inputLayernorm.call(x), ctx));
        return x.Plus(_mlp.call(_postAttentionLayernorm.call(x)));
    }
}

/// <summary>The body (<c>model.*</c>): <c>embed_tokens</c>, <c>layers</c>, final <c>norm</c>.</summary>
internal sealed class Phi3Model : nn.Module<Tensor, AttentionContext, Tensor>
{
    [ComponentName(Name = "embed_tokens")] private readonly TokenEmbedding _embedTokens;
    [ComponentName(Name = "layers")] private readonly ModuleList<Phi3DecoderLayer> _layers;
    [ComponentName(Name = "norm")] private readonly LlamaRmsNorm _norm;

    public Phi3Model(ModelConfig config, Phi3Options options, Device? device) : base("model")
    {
        _embedTokens = new TokenEmbedding(config.VocabSize, config.HiddenSize, device);
        _layers = nn.ModuleList(Enumerable.Range(0, config.NumLayers).Select(i => new Phi3DecoderLayer(i, config, options, device)).ToArray());
        _norm = new LlamaRmsNorm(config.HiddenSize, options.RmsNormEps, device);
        RegisterComponents();
    }

    public TokenEmbedding EmbedTokens => _embedTokens;
    public ModuleList<Phi3DecoderLayer> Layers => _layers;

    public override Tensor forward(Tensor inputIds, AttentionContext ctx)
    {
        var x = _embedTokens.call(inputIds);  // [B, T, C]
        foreach (var layer in _layers) x = layer.call(x, ctx);
        return _norm.call(x);
    }
}

/// <summary>
/// Phi-3 settings beyond <see cref="ModelConfig"/>, read from <c>config.json</c>; <c>RotaryDim</c> is
/// int(head_dim · partial_rotary_factor), <c>SlidingWindow</c> null for full attention.
/// </summary>
internal sealed record Phi3Options(double RmsNormEps, double RopeTheta, int RotaryDim, int? SlidingWindow, Func<Tensor, Tensor> Activation)
{
    internal static Phi3Options Read(ConfigReader c, int headDim)
    {
        if (c.Raw["rope_scaling"] is JsonObject scaling)
        {
            var s = new ConfigReader(scaling, c.Source);
            string type = s.OptString("rope_type") ?? s.OptString("type") ?? "default";
            c.Require(type == "default", $"rope_scaling type \"{type}\" is not supported for phi3 (supported: default; the 128k models' longrope is not)");
        }
        double factor = c.Double("partial_rotary_factor", 1.0);
        int rotary = (int)(headDim * factor);
        c.Require(factor > 0 && factor <= 1 && rotary > 0 && rotary % 2 == 0, $"partial_rotary_factor {ConfigReader.Format(factor)} gives {rotary} rotary features of the head size {headDim}; they must be a positive even number");
        int? window = c.OptInt("sliding_window");
        c.Require(window is null or > 0, $"field \"sliding_window\" must be positive or null, got {window}");
        return new(c.Double("rms_norm_eps", 1e-5), c.Double("rope_theta", 10000.0), rotary, window, Activations.Parse(c, "hidden_act", "silu"));
    }
}

/// <summary>Phi-3 language model (<c>Phi3ForCausalLM</c>): <c>model.*</c> and, only when untied, <c>lm_head.weight</c>.</summary>
public sealed class Phi3 : CausalLM
{
    public const string ModelType = "phi3";

    [ComponentName(Name = "model")] private readonly Phi3Model _model;
    [ComponentName(Name = "lm_head")] private readonly Linear? _lmHead;
    private readonly Phi3Options _options;

    public Phi3(ModelConfig config, Device? device = null) : base(nameof(Phi3))
    {
        Config = config;
        _options = Phi3Options.Read(new ConfigReader(config.Raw, "config.json"), config.HeadDim);
        _model = new Phi3Model(config, _options, device);
        if (!config.TieWordEmbeddings) _lmHead = Layers.Linear(config.HiddenSize, config.VocabSize, hasBias: false, device);
        RegisterComponents();
    }

    public override ModelConfig Config { get; }

    /// <summary>Parses a Phi-3 <c>config.json</c> (defaults as in Hugging Face <c>Phi3Config</c>).</summary>
    public static ModelConfig ParseConfig(JsonObject raw, string source)
    {
        var c = new ConfigReader(raw, source);
        int hidden = c.Positive("hidden_size"), heads = c.Positive("num_attention_heads");
        int kvHeads = c.OptPositive("num_key_value_heads", heads);
        c.Require(heads % kvHeads == 0, $"num_attention_heads {heads} is not a multiple of num_key_value_heads {kvHeads}");
        c.Require(hidden % heads == 0, $"hidden_size {hidden} is not a multiple of num_attention_heads {heads}");
        _ = Phi3Options.Read(c, hidden / heads);
        return new ModelConfig
        {
            ModelType = ModelType,
            VocabSize = c.Positive("vocab_size"),
            HiddenSize = hidden,
            NumLayers = c.Positive("num_hidden_layers"),
            NumHeads = heads,
            NumKvHeads = kvHeads,
            IntermediateSize = c.Positive("intermediate_size"),
            MaxPositions = c.OptPositive("max_position_embeddings", 4096),
            TieWordEmbeddings = c.Bool("tie_word_embeddings", false),
            BosTokenId = c.TokenId("bos_token_id"),
            EosTokenId = c.TokenId("eos_token_id"),
            Raw = raw,
        };
    }

    public override Tensor Hidden(Tensor inputIds, Tensor? attentionMask = null, Tensor? positionIds = null, KvCache? cache = null)
    {
        using var scope = NewDisposeScope();
        var ctx = AttentionContext.Build(inputIds, attentionMask, positionIds, cache, _options.SlidingWindow is int w ? [w] : null);
        (ctx.Cos, ctx.Sin) = HalfRotary.Tables(ctx.Positions, _options.RotaryDim, _options.RopeTheta, 1.0);
        return _model.call(inputIds, ctx).MoveToOuterDisposeScope();  // [B, T, C]
    }

    /// <summary>Logits through <c>lm_head</c>, or the tied token embedding.</summary>
    public override Tensor Logits(Tensor hidden) => Unembedding.Project(hidden, OutputEmbedding);  // [..., V]

    public override Tensor OutputEmbedding => _lmHead?.weight ?? _model.EmbedTokens.weight!;

    internal override nn.Module<Tensor, AttentionContext, Tensor> Block(int layer) => _model.Layers[CheckLayer(layer)];

    /// <summary>Keys <c>gate_proj</c> and <c>up_proj</c>: the halves of <c>gate_up_proj</c>, stored in its weight.</summary>
    public override FfnParts Ffn(int layer)
    {
        var mlp = _model.Layers[CheckLayer(layer)].Mlp;
        return new FfnParts($"model.layers.{layer}.mlp",
            new Dictionary<string, Linear> { ["gate_proj"] = mlp.Gate, ["up_proj"] = mlp.Up }, "down_proj", mlp.DownProj)
        {
            KeyWeights = new Dictionary<string, string> { ["gate_proj"] = "gate_up_proj.weight", ["up_proj"] = "gate_up_proj.weight" },
        };
    }
}
