using System.Text.Json.Nodes;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace KeyValueLab.Tests.Inference;

/// <summary>One token per printable ASCII character; 0 = unknown, 1 = BOS, 2 = EOS. Streams like llama2.c (no space after BOS).</summary>
internal sealed class CharTokenizer : ITokenizer
{
    public const int Vocab = 3 + 95;
    public int? BosId => 1;
    public int? EosId => 2;

    public static int Id(char c) => c is >= ' ' and <= '~' ? 3 + (c - ' ') : 0;

    public IReadOnlyList<int> Encode(string text, bool addBos = false) => [.. (addBos ? [1] : Array.Empty<int>()), .. text.Select(Id)];

    public string Decode(IEnumerable<int> ids) => string.Concat(ids.Select(Piece));

    public string DecodeToken(int previousId, int id) => previousId == 1 && Piece(id) == " " ? "" : Piece(id);

    public byte[] DecodeTokenBytes(int previousId, int id) => System.Text.Encoding.UTF8.GetBytes(DecodeToken(previousId, id));

    public int VocabSize => Vocab;

    public string TokenText(int id) => Piece(id);

    private static string Piece(int id) => id >= 3 && id < Vocab ? ((char)(' ' + id - 3)).ToString() : "";
}

internal static class FakeConfig
{
    public static ModelConfig Make(string modelType, int vocab, int hidden, int layers, int heads, int maxPositions) => new()
    {
        ModelType = modelType, VocabSize = vocab, HiddenSize = hidden, NumLayers = layers, NumHeads = heads, NumKvHeads = heads,
        IntermediateSize = 4 * hidden, MaxPositions = maxPositions, TieWordEmbeddings = false, BosTokenId = 1, EosTokenId = 2,
        Raw = [],
    };
}

/// <summary>logits[b, t] = Table[ids[b, t]]: the next token depends only on the current one, so scores can be worked out by hand.</summary>
internal sealed class BigramLM : CausalLM
{
    private readonly ModelConfig _config;
    public float[,] Table { get; }
    private readonly Tensor _table;

    public BigramLM(float[,] table, string modelType = "gpt2", int maxPositions = 64) : base("bigram")
    {
        Table = table;
        _config = FakeConfig.Make(modelType, table.GetLength(1), 4, 1, 1, maxPositions);
        _table = tensor(table);
        _table.DetachFromDisposeScope();
    }

    public override ModelConfig Config => _config;

    public override Tensor Forward(Tensor inputIds, Tensor? attentionMask = null, Tensor? positionIds = null, KvCache? cache = null) =>
        _table.index_select(0, inputIds.flatten()).view(inputIds.shape[0], inputIds.shape[1], -1);

    /// <summary>The looked-up table rows are already the logits: Hidden is the lookup, Logits the identity.</summary>
    public override Tensor Hidden(Tensor inputIds, Tensor? attentionMask = null, Tensor? positionIds = null, KvCache? cache = null) =>
        Forward(inputIds, attentionMask, positionIds, cache);

    public override Tensor Logits(Tensor hidden) => hidden;

    public override Tensor OutputEmbedding => throw new NotSupportedException();

    public override FfnParts Ffn(int layer) => throw new NotSupportedException();

    internal override nn.Module<Tensor, AttentionContext, Tensor> Block(int layer) => throw new NotSupportedException();

    /// <summary>A random table where each row's argmax is <paramref name="next"/>(row), by a clear margin.</summary>
    public static float[,] TableWithChain(int vocab, Func<int, int> next, int seed)
    {
        var rng = new Random(seed);
        var t = new float[vocab, vocab];
        for (int i = 0; i < vocab; i++)
        {
            for (int j = 0; j < vocab; j++) t[i, j] = (float)(rng.NextDouble() * 4 - 2);
            t[i, next(i)] = 5f;
        }
        return t;
    }
}

/// <summary>
/// A small GPT-style transformer with learned positions, a padding mask, and the key/value cache, so
/// batching, padding and caching are exercised for real. Masked scores get -1e9 (not -inf), so a row
/// with every key masked gives uniform weights instead of NaN.
/// </summary>
internal sealed class TinyLM : CausalLM
{
    private readonly ModelConfig _config;
    private readonly Embedding wte, wpe;
    private readonly ModuleList<TinyBlock> h;
    private readonly LayerNorm ln_f;
    private readonly Linear lm_head;

    public TinyLM(string modelType = "gpt2", int vocab = CharTokenizer.Vocab, int hidden = 32, int layers = 2, int heads = 4, int maxPositions = 128, long seed = 1234)
        : base("tiny")
    {
        _config = FakeConfig.Make(modelType, vocab, hidden, layers, heads, maxPositions);
        using var _ = torch.NewDisposeScope();
        torch.random.manual_seed(seed);
        wte = nn.Embedding(vocab, hidden);
        wpe = nn.Embedding(maxPositions, hidden);
        h = nn.ModuleList([.. Enumerable.Range(0, layers).Select(i => new TinyBlock(hidden, heads))]);
        ln_f = nn.LayerNorm(hidden);
        lm_head = nn.Linear(hidden, vocab, hasBias: false);
        RegisterComponents();
        using var noGrad = torch.no_grad();
        foreach (var p in parameters()) if (p.dim() > 1) p.normal_(0, 0.5); // sharper logits than the default init
    }

    public override ModelConfig Config => _config;

    public override Tensor Forward(Tensor inputIds, Tensor? attentionMask = null, Tensor? positionIds = null, KvCache? cache = null) =>
        Logits(Hidden(inputIds, attentionMask, positionIds, cache));

    public override Tensor Logits(Tensor hidden) => lm_head.call(hidden);

    public override Tensor OutputEmbedding => lm_head.weight!;

    internal override nn.Module<Tensor, AttentionContext, Tensor> Block(int layer) => throw new NotSupportedException();

    public override Tensor Hidden(Tensor inputIds, Tensor? attentionMask = null, Tensor? positionIds = null, KvCache? cache = null)
    {
        long b = inputIds.shape[0], t = inputIds.shape[1], past = cache?.Length ?? 0, total = past + t;
        positionIds ??= (arange(t, dtype: ScalarType.Int64) + past).unsqueeze(0).expand(b, t);
        var x = wte.call(inputIds) + wpe.call(positionIds);                          // [B, T, D]
        var allowed = ones(t, total, dtype: ScalarType.Bool).tril(past).unsqueeze(0); // [1, T, S]: key j ≤ query i + past
        if (attentionMask is not null) allowed = allowed.logical_and(attentionMask.to(ScalarType.Bool).unsqueeze(1));
        var bias = zeros(allowed.shape).masked_fill(allowed.logical_not(), -1e9f).unsqueeze(1); // [B, 1, T, S]
        for (int i = 0; i < h.Count; i++) x = h[i].Run(x, bias, cache, i);
        return ln_f.call(x);
    }

    public override FfnParts Ffn(int layer) =>
        new($"h.{layer}.mlp", new Dictionary<string, Linear> { ["fc1"] = h[layer].fc1 }, "fc2", h[layer].fc2);
}

internal sealed class TinyBlock : nn.Module
{
    private readonly LayerNorm ln_1, ln_2;
    private readonly Linear q, k, v, o;
    internal readonly Linear fc1, fc2;
    private readonly int _heads;

    public TinyBlock(int hidden, int heads) : base("block")
    {
        _heads = heads;
        ln_1 = nn.LayerNorm(hidden);
        ln_2 = nn.LayerNorm(hidden);
        q = nn.Linear(hidden, hidden);
        k = nn.Linear(hidden, hidden);
        v = nn.Linear(hidden, hidden);
        o = nn.Linear(hidden, hidden);
        fc1 = nn.Linear(hidden, 2 * hidden);
        fc2 = nn.Linear(2 * hidden, hidden);
        RegisterComponents();
    }

    public Tensor Run(Tensor x, Tensor bias, KvCache? cache, int layer)
    {
        long b = x.shape[0], t = x.shape[1], d = x.shape[2], hd = d / _heads;
        var hn = ln_1.call(x);
        Tensor Split(Tensor y) => y.view(b, t, _heads, hd).transpose(1, 2);         // [B, H, T, hd]
        var (qq, kk, vv) = (Split(q.call(hn)), Split(k.call(hn)), Split(v.call(hn)));
        if (cache is not null) (kk, vv) = cache.Append(layer, kk, vv);
        var scores = qq.matmul(kk.transpose(2, 3)) / Math.Sqrt(hd) + bias;           // [B, H, T, S]
        var att = scores.softmax(-1).matmul(vv).transpose(1, 2).reshape(b, t, d);
        x = x + o.call(att);
        return x + fc2.call(nn.functional.gelu(fc1.call(ln_2.call(x))));
    }
}

/// <summary>One token per byte (ids 0..255), BOS = 256, EOS = 257: characters can be split over tokens.</summary>
internal sealed class ByteTokenizer : ITokenizer
{
    public int VocabSize => 258;
    public int? BosId => 256;
    public int? EosId => 257;
    public IReadOnlyList<int> Encode(string text, bool addBos = false) =>
        [.. (addBos ? [256] : Array.Empty<int>()), .. System.Text.Encoding.UTF8.GetBytes(text).Select(b => (int)b)];
    public string Decode(IEnumerable<int> ids) => System.Text.Encoding.UTF8.GetString([.. ids.Where(i => i < 256).Select(i => (byte)i)]);
    public string DecodeToken(int previousId, int id) => System.Text.Encoding.UTF8.GetString(DecodeTokenBytes(previousId, id));
    public byte[] DecodeTokenBytes(int previousId, int id) => id < 256 ? [(byte)id] : [];
    public string TokenText(int id) => id < 256 ? $"<0x{id:X2}>" : id == 256 ? "<s>" : "</s>";
}
