using System.Text.Json.Nodes;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using ComponentName = TorchSharp.Utils.ComponentNameAttribute;

namespace KeyValueLab.Models;

// GPT-2 (Radford et al. 2019) with Hugging Face `model_type: "gpt2"` names: learned positions,
// pre-LayerNorm blocks, gelu_new MLP, logits through the tied token embedding.
// The checkpoint stores Conv1D weights as [in, out]; here every weight is an nn.Linear [out, in]
// (transposed at load and back at save, see IsStoredTransposed), so editors see one orientation.

/// <summary>Causal self-attention: one fused q/k/v projection (<c>c_attn</c>) and an output projection (<c>c_proj</c>).</summary>
internal sealed class Gpt2Attention : nn.Module<Tensor, AttentionContext, Tensor>
{
    [ComponentName(Name = "c_attn")] private readonly Linear _cAttn;
    [ComponentName(Name = "c_proj")] private readonly Linear _cProj;
    private readonly int _layer, _heads;
    private readonly double _queryScale;
    private readonly Scalar _queryScaleScalar;  // held for the module's life (see HeldScalars)

    public Gpt2Attention(int layer, ModelConfig config, Gpt2Options options, Device? device) : base("attn")
    {
        (_layer, _heads) = (layer, config.NumHeads);
        _cAttn = Layers.Linear(config.HiddenSize, 3L * config.HiddenSize, hasBias: true, device);
        _cProj = Layers.Linear(config.HiddenSize, config.HiddenSize, hasBias: true, device);
        // scaled_dot_product_attention always divides by √d; the rarer GPT-2 variants rescale q instead.
        _queryScale = (options.ScaleAttnWeights ? 1.0 : Math.Sqrt(config.HeadDim))
                      / (options.ScaleAttnByInverseLayerIdx ? layer + 1 : 1);
        _queryScaleScalar = _queryScale.ToScalar();
        RegisterComponents();
    }

    public Linear CAttn => _cAttn;
    public Linear CProj => _cProj;

    public override Tensor forward(Tensor x, AttentionContext ctx)
    {
        long b = x.shape[0], t = x.shape[1], c = x.shape[2], d = c / _heads;
        var qkv = _cAttn.call(x).split(c, dim: 2);                      // 3 × [B, T, C]
        var q = qkv[0].view(b, t, _heads, d).transpose(1, 2);           // [B, H, T, d]
        var k = qkv[1].view(b, t, _heads, d).transpose(1, 2);
        var v = qkv[2].view(b, t, _heads, d).transpose(1, 2);
        if (_queryScale != 1.0) q = q.mul(_queryScaleScalar);
        if (ctx.Cache is not null) (k, v) = ctx.Cache.Append(_layer, k, v);  // [B, H, Past+T, d]
        var y = ctx.Attend(q, k, v).transpose(1, 2).reshape(b, t, c);     // [B, T, C]
        return _cProj.call(y);
    }
}

/// <summary>The feed-forward memory: keys <c>c_fc</c> [inner, C], activation, values <c>c_proj</c> [C, inner].</summary>
internal sealed class Gpt2Mlp : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "c_fc")] private readonly Linear _cFc;
    [ComponentName(Name = "c_proj")] private readonly Linear _cProj;
    private readonly Func<Tensor, Tensor> _act;

    public Gpt2Mlp(ModelConfig config, Gpt2Options options, Device? device) : base("mlp")
    {
        _cFc = Layers.Linear(config.HiddenSize, config.IntermediateSize, hasBias: true, device);
        _cProj = Layers.Linear(config.IntermediateSize, config.HiddenSize, hasBias: true, device);
        _act = options.Activation;
        RegisterComponents();
    }

    public Linear CFc => _cFc;
    public Linear CProj => _cProj;

    public override Tensor forward(Tensor x) => _cProj.call(_act(_cFc.call(x)));  // [B, T, inner] → [B, T, C]
}

/// <summary>One pre-LayerNorm transformer block: x + attn(ln_1(x)), then + mlp(ln_2(x)).</summary>
internal sealed class Gpt2Block : nn.Module<Tensor, AttentionContext, Tensor>
{
    [ComponentName(Name = "ln_1")] private readonly MetaSafeLayerNorm _ln1;
    [ComponentName(Name = "attn")] private readonly Gpt2Attention _attn;
    [ComponentName(Name = "ln_2")] private readonly MetaSafeLayerNorm _ln2;
    [ComponentName(Name = "mlp")] private readonly Gpt2Mlp _mlp;

    public Gpt2Block(int layer, ModelConfig config, Gpt2Options options, Device? device) : base("block")
    {
        _ln1 = new MetaSafeLayerNorm(config.HiddenSize, options.LayerNormEps, device);
        _attn = new Gpt2Attention(layer, config, options, device);
        _ln2 = new MetaSafeLayerNorm(config.HiddenSize, options.LayerNormEps, device);
        _mlp = new Gpt2Mlp(config, options, device);
        RegisterComponents();
    }

    public Gpt2Attention Attn => _attn;
    public Gpt2Mlp Mlp => _mlp;

    public override Tensor forward(Tensor x, AttentionContext ctx)
    {
        x = x.Plus(_attn.call(_ln1.call(x), ctx));
        return x.Plus(_mlp.call(_ln2.call(x)));
    }
}

/// <summary>The body (<c>transformer.*</c>): token and position embeddings, blocks <c>h</c>, final LayerNorm.</summary>
internal sealed class Gpt2Model : nn.Module<Tensor, AttentionContext, Tensor>
{
    [ComponentName(Name = "wte")] private readonly TokenEmbedding _wte;
    [ComponentName(Name = "wpe")] private readonly TokenEmbedding _wpe;
    [ComponentName(Name = "h")] private readonly ModuleList<Gpt2Block> _h;
    [ComponentName(Name = "ln_f")] private readonly MetaSafeLayerNorm _lnF;

    public Gpt2Model(ModelConfig config, Gpt2Options options, Device? device) : base("transformer")
    {
        _wte = new TokenEmbedding(config.VocabSize, config.HiddenSize, device);
        _wpe = new TokenEmbedding(config.MaxPositions, config.HiddenSize, device);
        _h = nn.ModuleList(Enumerable.Range(0, config.NumLayers).Select(i => new Gpt2Block(i, config, options, device)).ToArray());
        _lnF = new MetaSafeLayerNorm(config.HiddenSize, options.LayerNormEps, device);
        RegisterComponents();
    }

    public TokenEmbedding Wte => _wte;
    public TokenEmbedding Wpe => _wpe;
    public ModuleList<Gpt2Block> H => _h;

    /// <summary>Final hidden states <c>[B, T, C]</c> after <c>ln_f</c>.</summary>
    public override Tensor forward(Tensor inputIds, AttentionContext ctx)
    {
        var x = _wte.call(inputIds).Plus(_wpe.call(ctx.Positions));  // [B, T, C]
        foreach (var block in _h)
            x = Checkpointed is { } generators ? LayerCheckpoint.Apply(h => block.call(h, ctx), x, generators) : block.call(x, ctx);
        return _lnF.call(x);
    }

    /// <summary>Set while the owning model checkpoints its blocks: the generators to restore before recomputing one (see <see cref="LayerCheckpoint"/>).</summary>
    internal IReadOnlyList<Generator>? Checkpointed { get; set; }
}

/// <summary>GPT-2 settings beyond <see cref="ModelConfig"/>, read from <c>config.json</c>.</summary>
internal sealed record Gpt2Options(double LayerNormEps, Func<Tensor, Tensor> Activation, bool ScaleAttnWeights, bool ScaleAttnByInverseLayerIdx)
{
    internal static Gpt2Options Read(ConfigReader c) => new(
        c.Double("layer_norm_epsilon", 1e-5),
        Activations.Parse(c, "activation_function", "gelu_new"),
        c.Bool("scale_attn_weights", true),
        c.Bool("scale_attn_by_inverse_layer_idx", false));
}

/// <summary>GPT-2 language model (<c>GPT2LMHeadModel</c>): <c>transformer.*</c> and, only when untied, <c>lm_head.weight</c>.</summary>
public sealed class Gpt2 : CausalLM
{
    public const string ModelType = "gpt2";

    [ComponentName(Name = "transformer")] private readonly Gpt2Model _transformer;
    [ComponentName(Name = "lm_head")] private readonly Linear? _lmHead;

    public Gpt2(ModelConfig config, Device? device = null) : base(nameof(Gpt2))
    {
        Config = config;
        var options = Gpt2Options.Read(new ConfigReader(config.Raw, "config.json"));
        _transformer = new Gpt2Model(config, options, device);
        if (!config.TieWordEmbeddings) _lmHead = Layers.Linear(config.HiddenSize, config.VocabSize, hasBias: false, device);
        RegisterComponents();
    }

    public override ModelConfig Config { get; }
    internal Gpt2Model Transformer => _transformer;

    /// <summary>Parses a GPT-2 <c>config.json</c> (defaults as in Hugging Face <c>GPT2Config</c>).</summary>
    public static ModelConfig ParseConfig(JsonObject raw, string source)
    {
        var c = new ConfigReader(raw, source);
        int hidden = c.Positive("n_embd"), heads = c.Positive("n_head");
        c.Require(hidden % heads == 0, $"n_embd {hidden} is not a multiple of n_head {heads}");
        _ = Gpt2Options.Read(c);
        return new ModelConfig
        {
            ModelType = ModelType,
            VocabSize = c.Positive("vocab_size"),
            HiddenSize = hidden,
            NumLayers = c.Positive("n_layer"),
            NumHeads = heads,
            NumKvHeads = heads,
            IntermediateSize = c.OptPositive("n_inner", 4 * hidden),
            MaxPositions = c.Positive("n_positions"),
            TieWordEmbeddings = c.Bool("tie_word_embeddings", true),
            BosTokenId = c.TokenId("bos_token_id"),
            EosTokenId = c.TokenId("eos_token_id"),
            Raw = raw,
        };
    }

    public override Tensor Hidden(Tensor inputIds, Tensor? attentionMask = null, Tensor? positionIds = null, KvCache? cache = null)
    {
        using var scope = NewDisposeScope();
        var ctx = AttentionContext.Build(inputIds, attentionMask, positionIds, cache);
        // Without explicit positions or padding they run Past..Past+T-1, so the shapes give the largest; otherwise it is read
        // back, except on meta (no values; max() has no meta kernel there).
        long? maxPosition = positionIds is null && attentionMask is null ? ctx.Past + ctx.Length - 1
            : MetaDevice.Is(ctx.Positions) ? null : ctx.Positions.max().item<long>();
        if (maxPosition >= Config.MaxPositions)
            throw new ArgumentException($"position {maxPosition} is past GPT-2's n_positions {Config.MaxPositions}");
        return Run(ctx, () => _transformer.call(inputIds, ctx));
    }

    public override bool SupportsGradientCheckpointing => true;

    /// <summary>The blocks, checkpointed when <see cref="CausalLM.GradientCheckpointing"/> is set and a gradient is recorded; <c>[B, T, C]</c>.</summary>
    private Tensor Run(AttentionContext ctx, Func<Tensor> blocks)
    {
        // Checkpointed blocks run again in the backward pass, after this call: the shared mask (and rotary tables) must outlive it.
        bool checkpoint = GradientCheckpointing && is_grad_enabled();
        if (checkpoint) ctx.KeepForBackward();
        _transformer.Checkpointed = checkpoint ? CheckpointGenerators : null;
        try { return blocks().MoveToOuterDisposeScope(); }
        finally { _transformer.Checkpointed = null; }
    }

    /// <summary>Logits through the tied token embedding (or <c>lm_head</c> when untied).</summary>
    public override Tensor Logits(Tensor hidden) =>
        Unembedding.Project(hidden, OutputEmbedding, _lmHead?.bias);  // [..., V]

    public override Tensor OutputEmbedding => _lmHead?.weight ?? _transformer.Wte.weight!;

    internal override nn.Module<Tensor, AttentionContext, Tensor> Block(int layer) => _transformer.H[CheckLayer(layer)];

    public override FfnParts Ffn(int layer)
    {
        var mlp = _transformer.H[CheckLayer(layer)].Mlp;
        return new FfnParts($"transformer.h.{layer}.mlp", new Dictionary<string, Linear> { ["c_fc"] = mlp.CFc }, "c_proj", mlp.CProj);
    }

    /// <summary>Conv1D weights: <c>c_attn</c>, <c>c_proj</c> (attention and MLP) and <c>c_fc</c> are stored <c>[in, out]</c>.</summary>
    internal override bool IsStoredTransposed(string parameterName) =>
        parameterName.EndsWith(".weight", StringComparison.Ordinal) &&
        (parameterName.EndsWith(".c_attn.weight", StringComparison.Ordinal) || parameterName.EndsWith(".c_proj.weight", StringComparison.Ordinal)
         || parameterName.EndsWith(".c_fc.weight", StringComparison.Ordinal));
}
