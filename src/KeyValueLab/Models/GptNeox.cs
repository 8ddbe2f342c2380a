using System.Text.Json.Nodes;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using ComponentName = TorchSharp.Utils.ComponentNameAttribute;

namespace KeyValueLab.Models;

// GPT-NeoX (Black et al. 2022; Pythia, Biderman et al. 2023) with Hugging Face `model_type: "gpt_neox"`
// names. q, k and v come from one fused `query_key_value` whose output is laid out PER HEAD,
// [head][q | k | v][head_dim] (not [q | k | v] as in Phi-3). Rotary embeddings rotate halves (as Llama)
// on only the first rotary_pct · head_dim features of each head, with base `rotary_emb_base`. LayerNorms
// and every linear have biases; the head `embed_out` is untied and has none. With
// `use_parallel_residual` (Pythia), attention and MLP read the same residual stream through their own
// norms: x + attn(ln1(x)) + mlp(ln2(x)); without it the block is sequential, as GPT-2's.

/// <summary>Self-attention with the fused per-head <c>query_key_value</c> [3C, C] and the output projection <c>dense</c> [C, C].</summary>
internal sealed class GptNeoxAttention : nn.Module<Tensor, AttentionContext, Tensor>
{
    [ComponentName(Name = "query_key_value")] private readonly Linear _queryKeyValue;
    [ComponentName(Name = "dense")] private readonly Linear _dense;
    private readonly int _layer, _heads, _headDim;

    public GptNeoxAttention(int layer, ModelConfig config, GptNeoxOptions options, Device? device) : base("attention")
    {
        (_layer, _heads, _headDim) = (layer, config.NumHeads, config.HeadDim);
        long c = config.HiddenSize;
        _queryKeyValue = Layers.Linear(c, 3 * c, hasBias: options.AttentionBias, device);
        _dense = Layers.Linear(c, c, hasBias: options.AttentionBias, device);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, AttentionContext ctx)
    {
        long b = x.shape[0], t = x.shape[1], c = x.shape[2];
        var qkv = _queryKeyValue.call(x).view(b, t, _heads, 3 * _headDim).transpose(1, 2);  // [B, H, T, 3d]
        var parts = qkv.chunk(3, dim: -1);                                                    // 3 × [B, H, T, d]
        var q = HalfRotary.Apply(parts[0], ctx.Cos!, ctx.Sin!);
        var k = HalfRotary.Apply(parts[1], ctx.Cos!, ctx.Sin!);
        var v = parts[2];
        if (ctx.Cache is not null) (k, v) = ctx.Cache.Append(_layer, k, v);                    // [B, H, Past+T, d]
        var y = ctx.Attend(q, k, v).transpose(1, 2).reshape(b, t, c);                        // [B, T, C]
        return _dense.call(y);
    }
}

/// <summary>The feed-forward memory: keys <c>dense_h_to_4h</c> [inner, C], activation, values <c>dense_4h_to_h</c> [C, inner].</summary>
internal sealed class GptNeoxMlp : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "dense_h_to_4h")] private readonly Linear _denseHTo4h;
    [ComponentName(Name = "dense_4h_to_h")] private readonly Linear _dense4hToH;
    private readonly Func<Tensor, Tensor> _act;

    public GptNeoxMlp(ModelConfig config, GptNeoxOptions options, Device? device) : base("mlp")
    {
        _denseHTo4h = Layers.Linear(config.HiddenSize, config.IntermediateSize, hasBias: true, device);
        _dense4hToH = Layers.Linear(config.IntermediateSize, config.HiddenSize, hasBias: true, device);
        _act = options.Activation;
        RegisterComponents();
    }

    public Linear DenseHTo4h => _denseHTo4h;
    public Linear Dense4hToH => _dense4hToH;

    public override Tensor forward(Tensor x) => _dense4hToH.call(_act(_denseHTo4h.call(x)));  // [B, T, inner] → [B, T, C]
}

/// <summary>One layer: parallel x + attn(ln1(x)) + mlp(ln2(x)), or sequential a = x + attn(ln1(x)); a + mlp(ln2(a)).</summary>
internal sealed class GptNeoxLayer : nn.Module<Tensor, AttentionContext, Tensor>
{
    [ComponentName(Name = "input_layernorm")] private readonly MetaSafeLayerNorm _inputLayernorm;
    [ComponentName(Name = "post_attention_layernorm")] private readonly MetaSafeLayerNorm _postAttentionLayernorm;
    [ComponentName(Name = "attention")] private readonly GptNeoxAttention _attention;
    [ComponentName(Name = "mlp")] private readonly GptNeoxMlp _mlp;
    private readonly bool _parallel;

    public GptNeoxLayer(int layer, ModelConfig config, GptNeoxOptions options, Device? device) : base("layer")
    {
        _inputLayernorm = new MetaSafeLayerNorm(config.HiddenSize, options.LayerNormEps, device);
        _postAttentionLayernorm = new MetaSafeLayerNorm(config.HiddenSize, options.LayerNormEps, device);
        _attention = new GptNeoxAttention(layer, config, options, device);
        _mlp = new GptNeoxMlp(config, options, device);
        _parallel = options.ParallelResidual;
        RegisterComponents();
    }

    public GptNeoxMlp Mlp => _mlp;

    public override Tensor forward(Tensor x, AttentionContext ctx)
    {
        var attended = _attention.call(_inputLayernorm.call(x), ctx);
        if (_parallel) return x.Plus(attended).Plus(_mlp.call(_postAttentionLayernorm.call(x)));
        var a = x.Plus(attended);
        return a.Plus(_mlp.call(_postAttentionLayernorm.call(a)));
    }
}

/// <summary>The body (<c>gpt_neox.*</c>): <c>embed_in</c>, <c>layers</c>, <c>final_layer_norm</c>.</summary>
internal sealed class GptNeoxModel : nn.Module<Tensor, AttentionContext, Tensor>
{
    [ComponentName(Name = "embed_in")] private readonly TokenEmbedding _embedIn;
    [ComponentName(Name = "layers")] private readonly ModuleList<GptNeoxLayer> _layers;
    [ComponentName(Name = "final_layer_norm")] private readonly MetaSafeLayerNorm _finalLayerNorm;

    public GptNeoxModel(ModelConfig config, GptNeoxOptions options, Device? device) : base("gpt_neox")
    {
        _embedIn = new TokenEmbedding(config.VocabSize, config.HiddenSize, device);
        _layers = nn.ModuleList(Enumerable.Range(0, config.NumLayers).Select(i => new GptNeoxLayer(i, config, options, device)).ToArray());
        _finalLayerNorm = new MetaSafeLayerNorm(config.HiddenSize, options.LayerNormEps, device);
        RegisterComponents();
    }

    public ModuleList<GptNeoxLayer> Layers => _layers;

    public override Tensor forward(Tensor inputIds, AttentionContext ctx)
    {
        var x = _embedIn.call(inputIds);  // [B, T, C]
        foreach (var layer in _layers) x = layer.call(x, ctx);
        return _finalLayerNorm.call(x);
    }
}

/// <summary>
/// GPT-NeoX settings beyond <see cref="ModelConfig"/>, read from <c>config.json</c>; <c>RotaryDim</c> is
/// int(head_dim · rotary_pct), the rotated features of each head.
/// </summary>
internal sealed record GptNeoxOptions(int RotaryDim, double RotaryBase, double LayerNormEps, bool ParallelResidual, bool AttentionBias, Func<Tensor, Tensor> Activation)
{
    internal static GptNeoxOptions Read(ConfigReader c, int headDim)
    {
        double pct = c.Double("rotary_pct", c.Double("partial_rotary_factor", 0.25));
        int rotary = (int)(headDim * pct);
        c.Require(pct > 0 && pct <= 1 && rotary > 0 && rotary % 2 == 0, $"rotary_pct {ConfigReader.Format(pct)} gives {rotary} rotary features of the head size {headDim}; they must be a positive even number");
        if (c.Raw["rope_scaling"] is JsonObject scaling)
        {
            string type = new ConfigReader(scaling, c.Source).OptString("rope_type") ?? new ConfigReader(scaling, c.Source).OptString("type") ?? "default";
            c.Require(type == "default", $"rope_scaling type \"{type}\" is not supported (supported: default)");
        }
        return new(rotary, c.Double("rotary_emb_base", c.Double("rope_theta", 10000.0)), c.Double("layer_norm_eps", 1e-5),
            c.Bool("use_parallel_residual", true), c.Bool("attention_bias", true), Activations.Parse(c, "hidden_act", "gelu"));
    }
}

/// <summary>GPT-NeoX language model (<c>GPTNeoXForCausalLM</c>): <c>gpt_neox.*</c> and the untied head <c>embed_out.weight</c>.</summary>
public sealed class GptNeox : CausalLM
{
    public const string ModelType = "gpt_neox";

    [ComponentName(Name = "gpt_neox")] private readonly GptNeoxModel _gptNeox;
    [ComponentName(Name = "embed_out")] private readonly Linear _embedOut;
    private readonly GptNeoxOptions _options;

    public GptNeox(ModelConfig config, Device? device = null) : base(nameof(GptNeox))
    {
        Config = config;
        _options = GptNeoxOptions.Read(new ConfigReader(config.Raw, "config.json"), config.HeadDim);
        _gptNeox = new GptNeoxModel(config, _options, device);
        _embedOut = Layers.Linear(config.HiddenSize, config.VocabSize, hasBias: false, device);
        RegisterComponents();
    }

    public override ModelConfig Config { get; }

    /// <summary>Parses a GPT-NeoX <c>config.json</c> (defaults as in Hugging Face <c>GPTNeoXConfig</c>).</summary>
    public static ModelConfig ParseConfig(JsonObject raw, string source)
    {
        var c = new ConfigReader(raw, source);
        int hidden = c.Positive("hidden_size"), heads = c.Positive("num_attention_heads");
        c.Require(hidden % heads == 0, $"hidden_size {hidden} is not a multiple of num_attention_heads {heads}");
        _ = GptNeoxOptions.Read(c, hidden / heads);
        c.Require(!c.Bool("tie_word_embeddings", false), "tie_word_embeddings true is not supported for gpt_neox (its embed_out is a separate matrix)");
        return new ModelConfig
        {
            ModelType = ModelType,
            VocabSize = c.Positive("vocab_size"),
            HiddenSize = hidden,
            NumLayers = c.Positive("num_hidden_layers"),
            NumHeads = heads,
            NumKvHeads = heads,
            IntermediateSize = c.OptPositive("intermediate_size", 4 * hidden),
            MaxPositions = c.OptPositive("max_position_embeddings", 2048),
            TieWordEmbeddings = false,
            BosTokenId = c.TokenId("bos_token_id"),
            EosTokenId = c.TokenId("eos_token_id"),
            Raw = raw,
        };
    }

    public override Tensor Hidden(Tensor inputIds, Tensor? attentionMask = null, Tensor? positionIds = null, KvCache? cache = null)
    {
        using var scope = NewDisposeScope();
        var ctx = AttentionContext.Build(inputIds, attentionMask, positionIds, cache);
        (ctx.Cos, ctx.Sin) = HalfRotary.Tables(ctx.Positions, _options.RotaryDim, _options.RotaryBase, 1.0);
        return _gptNeox.call(inputIds, ctx).MoveToOuterDisposeScope();  // [B, T, C]
    }

    /// <summary>Logits through <c>embed_out</c>.</summary>
    public override Tensor Logits(Tensor hidden) => Unembedding.Project(hidden, OutputEmbedding);  // [..., V]

    public override Tensor OutputEmbedding => _embedOut.weight!;

    internal override nn.Module<Tensor, AttentionContext, Tensor> Block(int layer) => _gptNeox.Layers[CheckLayer(layer)];

    public override FfnParts Ffn(int layer)
    {
        var mlp = _gptNeox.Layers[CheckLayer(layer)].Mlp;
        return new FfnParts($"gpt_neox.layers.{layer}.mlp", new Dictionary<string, Linear> { ["dense_h_to_4h"] = mlp.DenseHTo4h }, "dense_4h_to_h", mlp.Dense4hToH);
    }
}
