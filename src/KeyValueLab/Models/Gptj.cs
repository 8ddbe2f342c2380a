using System.Text.Json.Nodes;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using ComponentName = TorchSharp.Utils.ComponentNameAttribute;

namespace KeyValueLab.Models;

// GPT-J (Wang & Komatsuzaki 2021) with Hugging Face `model_type: "gptj"` names: no position
// embeddings but rotary embeddings on the first `rotary_dim` features of each head, rotating
// INTERLEAVED pairs (x0,x1), (x2,x3), … (Mesh-Transformer-JAX layout, unlike Llama's halves);
// attention and MLP read the same ln_1 output and are added to the residual in parallel;
// no attention biases; an untied lm_head with a bias.

/// <summary>Rotary tables and rotation for GPT-J's interleaved layout.</summary>
internal static class InterleavedRotary
{
    /// <summary>cos and sin <c>[B, 1, T, rotaryDim]</c>, each angle repeated for its pair.</summary>
    public static (Tensor Cos, Tensor Sin) Tables(Tensor positions, int rotaryDim, double theta)
    {
        using Scalar dims = (long)rotaryDim;  // held (see HeldScalars): runs every forward
        var invFreq = pow(tensor(theta, ScalarType.Float64, positions.device), HeldScalars.Arange(0, rotaryDim, 2, ScalarType.Float64, positions.device).neg().div(dims));  // [rot/2]
        var angles = positions.to(ScalarType.Float64).unsqueeze(-1) * invFreq;                                                 // [B, T, rot/2]
        var cos = angles.cos().repeat_interleave(2, dim: -1).to(ScalarType.Float32).unsqueeze(1);                              // [B, 1, T, rot]
        var sin = angles.sin().repeat_interleave(2, dim: -1).to(ScalarType.Float32).unsqueeze(1);
        return (cos, sin);
    }

    /// <summary>Rotates the first rot features of <paramref name="x"/> <c>[B, H, T, d]</c>; the rest pass through.</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        long rot = cos.shape[^1], d = x.shape[^1];
        var xr = rot == d ? x : x.narrow(-1, 0, rot);
        long[] shape = xr.shape;
        var pairs = xr.reshape([.. shape[..^1], rot / 2, 2]);                        // [B, H, T, rot/2, 2]
        var x1 = pairs.select(-1, 0);
        var x2 = pairs.select(-1, 1);
        var rotated = stack([-x2, x1], dim: -1).reshape(shape);                      // (-x1, x0, -x3, x2, …)
        var y = (xr * cos.to(x.dtype)).Plus(rotated * sin.to(x.dtype));
        return rot == d ? y : cat([y, x.narrow(-1, rot, d - rot)], dim: -1);
    }
}

/// <summary>Self-attention with separate bias-free projections <c>q_proj</c>, <c>k_proj</c>, <c>v_proj</c>, <c>out_proj</c>.</summary>
internal sealed class GptjAttention : nn.Module<Tensor, AttentionContext, Tensor>
{
    [ComponentName(Name = "q_proj")] private readonly Linear _qProj;
    [ComponentName(Name = "k_proj")] private readonly Linear _kProj;
    [ComponentName(Name = "v_proj")] private readonly Linear _vProj;
    [ComponentName(Name = "out_proj")] private readonly Linear _outProj;
    private readonly int _layer, _heads;

    public GptjAttention(int layer, ModelConfig config, Device? device) : base("attn")
    {
        (_layer, _heads) = (layer, config.NumHeads);
        long c = config.HiddenSize;
        _qProj = Layers.Linear(c, c, hasBias: false, device);
        _kProj = Layers.Linear(c, c, hasBias: false, device);
        _vProj = Layers.Linear(c, c, hasBias: false, device);
        _outProj = Layers.Linear(c, c, hasBias: false, device);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, AttentionContext ctx)
    {
        long b = x.shape[0], t = x.shape[1], c = x.shape[2], d = c / _heads;
        var q = _qProj.call(x).view(b, t, _heads, d).transpose(1, 2);    // [B, H, T, d]
        var k = _kProj.call(x).view(b, t, _heads, d).transpose(1, 2);
        var v = _vProj.call(x).view(b, t, _heads, d).transpose(1, 2);
        q = InterleavedRotary.Apply(q, ctx.Cos!, ctx.Sin!);
        k = InterleavedRotary.Apply(k, ctx.Cos!, ctx.Sin!);
        if (ctx.Cache is not null) (k, v) = ctx.Cache.Append(_layer, k, v);  // [B, H, Past+T, d]
        var y = ctx.Attend(q, k, v).transpose(1, 2).reshape(b, t, c);     // [B, T, C]
        return _outProj.call(y);
    }
}

/// <summary>The feed-forward memory: keys <c>fc_in</c> [inner, C], activation, values <c>fc_out</c> [C, inner].</summary>
internal sealed class GptjMlp : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "fc_in")] private readonly Linear _fcIn;
    [ComponentName(Name = "fc_out")] private readonly Linear _fcOut;
    private readonly Func<Tensor, Tensor> _act;

    public GptjMlp(ModelConfig config, GptjOptions options, Device? device) : base("mlp")
    {
        _fcIn = Layers.Linear(config.HiddenSize, config.IntermediateSize, hasBias: true, device);
        _fcOut = Layers.Linear(config.IntermediateSize, config.HiddenSize, hasBias: true, device);
        _act = options.Activation;
        RegisterComponents();
    }

    public Linear FcIn => _fcIn;
    public Linear FcOut => _fcOut;

    public override Tensor forward(Tensor x) => _fcOut.call(_act(_fcIn.call(x)));  // [B, T, inner] → [B, T, C]
}

/// <summary>One block: h = ln_1(x); x + attn(h) + mlp(h).</summary>
internal sealed class GptjBlock : nn.Module<Tensor, AttentionContext, Tensor>
{
    [ComponentName(Name = "ln_1")] private readonly MetaSafeLayerNorm _ln1;
    [ComponentName(Name = "attn")] private readonly GptjAttention _attn;
    [ComponentName(Name = "mlp")] private readonly GptjMlp _mlp;

    public GptjBlock(int layer, ModelConfig config, GptjOptions options, Device? device) : base("block")
    {
        _ln1 = new MetaSafeLayerNorm(config.HiddenSize, options.LayerNormEps, device);
        _attn = new GptjAttention(layer, config, device);
        _mlp = new GptjMlp(config, options, device);
        RegisterComponents();
    }

    public GptjAttention Attn => _attn;
    public GptjMlp Mlp => _mlp;

    public override Tensor forward(Tensor x, AttentionContext ctx)
    {
        var h = _ln1.call(x);
        return x.Plus(_attn.call(h, ctx)).Plus(_mlp.call(h));
    }
}

/// <summary>The body (<c>transformer.*</c>): token embedding <c>wte</c>, blocks <c>h</c>, final LayerNorm <c>ln_f</c>.</summary>
internal sealed class GptjModel : nn.Module<Tensor, AttentionContext, Tensor>
{
    [ComponentName(Name = "wte")] private readonly TokenEmbedding _wte;
    [ComponentName(Name = "h")] private readonly ModuleList<GptjBlock> _h;
    [ComponentName(Name = "ln_f")] private readonly MetaSafeLayerNorm _lnF;

    public GptjModel(ModelConfig config, GptjOptions options, Device? device) : base("transformer")
    {
        _wte = new TokenEmbedding(config.VocabSize, config.HiddenSize, device);
        _h = nn.ModuleList(Enumerable.Range(0, config.NumLayers).Select(i => new GptjBlock(i, config, options, device)).ToArray());
        _lnF = new MetaSafeLayerNorm(config.HiddenSize, options.LayerNormEps, device);
        RegisterComponents();
    }

    public TokenEmbedding Wte => _wte;
    public ModuleList<GptjBlock> H => _h;

    public override Tensor forward(Tensor inputIds, AttentionContext ctx)
    {
        var x = _wte.call(inputIds);  // [B, T, C]
        foreach (var block in _h)
            x = Checkpointed is { } generators ? LayerCheckpoint.Apply(h => block.call(h, ctx), x, generators) : block.call(x, ctx);
        return _lnF.call(x);
    }

    /// <summary>Set while the owning model checkpoints its blocks: the generators to restore before recomputing one (see <see cref="LayerCheckpoint"/>).</summary>
    internal IReadOnlyList<Generator>? Checkpointed { get; set; }
}

/// <summary>GPT-J settings beyond <see cref="ModelConfig"/>, read from <c>config.json</c>.</summary>
internal sealed record GptjOptions(int RotaryDim, double LayerNormEps, Func<Tensor, Tensor> Activation)
{
    internal static GptjOptions Read(ConfigReader c, int headDim)
    {
        int rotary = c.OptInt("rotary_dim") ?? headDim;  // null means the whole head (Hugging Face GPTJAttention)
        c.Require(rotary > 0 && rotary <= headDim && rotary % 2 == 0, $"rotary_dim {rotary} must be even and within the head size {headDim}");
        return new(rotary, c.Double("layer_norm_epsilon", 1e-5), Activations.Parse(c, "activation_function", "gelu_new"));
    }
}

/// <summary>GPT-J language model (<c>GPTJForCausalLM</c>): <c>transformer.*</c>, <c>lm_head.weight</c> and <c>lm_head.bias</c>.</summary>
public sealed class Gptj : CausalLM
{
    public const string ModelType = "gptj";
    private const double RotaryBase = 10000.0;

    [ComponentName(Name = "transformer")] private readonly GptjModel _transformer;
    [ComponentName(Name = "lm_head")] private readonly Linear _lmHead;
    private readonly int _rotaryDim;

    public Gptj(ModelConfig config, Device? device = null) : base(nameof(Gptj))
    {
        Config = config;
        var options = GptjOptions.Read(new ConfigReader(config.Raw, "config.json"), config.HeadDim);
        _rotaryDim = options.RotaryDim;
        _transformer = new GptjModel(config, options, device);
        _lmHead = Layers.Linear(config.HiddenSize, config.VocabSize, hasBias: true, device);
        RegisterComponents();
    }

    public override ModelConfig Config { get; }
    internal GptjModel Transformer => _transformer;
    public Linear LmHead => _lmHead;

    /// <summary>Parses a GPT-J <c>config.json</c> (defaults as in Hugging Face <c>GPTJConfig</c>).</summary>
    public static ModelConfig ParseConfig(JsonObject raw, string source)
    {
        var c = new ConfigReader(raw, source);
        int hidden = c.Positive("n_embd"), heads = c.Positive("n_head");
        c.Require(hidden % heads == 0, $"n_embd {hidden} is not a multiple of n_head {heads}");
        _ = GptjOptions.Read(c, hidden / heads);
        bool tied = c.Bool("tie_word_embeddings", false);
        c.Require(!tied, "tie_word_embeddings true is not supported for gptj (its lm_head has its own weight and bias)");
        return new ModelConfig
        {
            ModelType = ModelType,
            VocabSize = c.Positive("vocab_size"),
            HiddenSize = hidden,
            NumLayers = c.Positive("n_layer"),
            NumHeads = heads,
            NumKvHeads = heads,
            IntermediateSize = c.OptPositive("n_inner", 4 * hidden),
            MaxPositions = c.OptPositive("n_positions", 2048),
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
        (ctx.Cos, ctx.Sin) = InterleavedRotary.Tables(ctx.Positions, _rotaryDim, RotaryBase);
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

    /// <summary>Logits through <c>lm_head</c> (weight and bias).</summary>
    public override Tensor Logits(Tensor hidden) => Unembedding.Project(hidden, OutputEmbedding, _lmHead.bias);  // [..., V]

    public override Tensor OutputEmbedding => _lmHead.weight!;

    internal override nn.Module<Tensor, AttentionContext, Tensor> Block(int layer) => _transformer.H[CheckLayer(layer)];

    public override FfnParts Ffn(int layer)
    {
        var mlp = _transformer.H[CheckLayer(layer)].Mlp;
        return new FfnParts($"transformer.h.{layer}.mlp", new Dictionary<string, Linear> { ["fc_in"] = mlp.FcIn }, "fc_out", mlp.FcOut);
    }
}
