using System.Text;
using KeyValueLab.Checkpoints;

namespace KeyValueLab.Tokenization;

/// <summary>
/// A tokenizer as llama.cpp stores it in GGUF metadata (<c>tokenizer.ggml.*</c>, gguf-py constants.py):
/// <c>model</c> "llama" (SentencePiece: tokens, scores, token types) or "gpt2" (byte-level BPE: tokens in GPT-2's
/// byte-to-character spelling, merges "a b", <c>pre</c> naming the split regex), special token ids, add_bos.
/// </summary>
public sealed record GgufVocabulary(
    string Model, string? Pre, string[] Tokens, float[]? Scores, int[] Types, string[]? Merges,
    int? BosId, int? EosId, int? UnknownId, int? PaddingId, bool AddBos)
{
    private const string P = "tokenizer.ggml.";

    /// <summary>SentencePiece add_dummy_prefix (<c>tokenizer.ggml.add_space_prefix</c>; llama.cpp's default is true, Gemma's models false).</summary>
    public bool AddSpacePrefix { get; init; } = true;

    // tokenizer.ggml.pre names (llama.cpp llama-vocab.cpp) of the split regexes this project implements.
    private static readonly (string Pre, string Pattern)[] PreTokenizers =
    [
        ("gpt-2", Gpt2Tokenizer.Gpt2Pattern), ("llama-bpe", Gpt2Tokenizer.Llama3Pattern), ("qwen2", Gpt2Tokenizer.Qwen2Pattern),
    ];

    /// <summary>The metadata entries, in the order llama.cpp's converter writes them.</summary>
    public IReadOnlyList<KeyValuePair<string, GgufValue>> ToMetadata()
    {
        var m = new List<KeyValuePair<string, GgufValue>> { new(P + "model", GgufValue.Of(Model)) };
        if (Pre is not null) m.Add(new(P + "pre", GgufValue.Of(Pre)));
        m.Add(new(P + "tokens", GgufValue.OfStrings(Tokens)));
        if (Scores is not null) m.Add(new(P + "scores", GgufValue.OfFloat32s(Scores)));
        m.Add(new(P + "token_type", GgufValue.OfInt32s(Types)));
        if (Merges is not null) m.Add(new(P + "merges", GgufValue.OfStrings(Merges)));
        foreach (var (key, id) in new[] { ("bos_token_id", BosId), ("eos_token_id", EosId), ("unknown_token_id", UnknownId), ("padding_token_id", PaddingId) })
            if (id is int x) m.Add(new(P + key, GgufValue.OfUInt32((uint)x)));
        m.Add(new(P + "add_bos_token", GgufValue.OfBool(AddBos)));
        if (Model == "llama") m.Add(new(P + "add_space_prefix", GgufValue.OfBool(AddSpacePrefix)));
        return m;
    }

    /// <summary>The GGUF form of one of this project's tokenizers.</summary>
    /// <exception cref="NotSupportedException">A tokenizer llama.cpp's vocabulary format cannot express (named).</exception>
    public static GgufVocabulary FromTokenizer(ITokenizer tokenizer)
    {
        switch (tokenizer)
        {
            case SentencePieceTokenizer sp:
            {
                var pieces = sp.Pieces;
                return new GgufVocabulary("llama", "default", pieces.Select(p => p.Piece).ToArray(), pieces.Select(p => p.Score).ToArray(),
                    pieces.Select(p => p.Type).ToArray(), null, sp.BosId, sp.EosId, sp.UnknownId, null, AddBos: true) { AddSpacePrefix = sp.AddDummyPrefix };
            }
            case Llama2cTokenizer l2:
            {
                // As llama.cpp's convert-llama2c-to-ggml: 0 <unk>, 1 <s>, 2 </s> (llama2.c exports them as "\n<s>\n"…),
                // <0xXX> byte tokens, spaces written as U+2581.
                int n = l2.VocabSize;
                var tokens = new string[n];
                var types = new int[n];
                var scores = new float[n];
                for (int i = 0; i < n; i++)
                {
                    string text = Encoding.UTF8.GetString(l2.PieceBytes(i));
                    scores[i] = l2.Score(i);
                    (tokens[i], types[i]) = i switch
                    {
                        0 => ("<unk>", SentencePieceModelProto.Unknown),
                        1 => ("<s>", SentencePieceModelProto.Control),
                        2 => ("</s>", SentencePieceModelProto.Control),
                        _ when text.Length == 6 && text.StartsWith("<0x", StringComparison.Ordinal) && text[5] == '>' => (text, SentencePieceModelProto.Byte),
                        _ => (text.Replace(' ', '\u2581'), SentencePieceModelProto.Normal),
                    };
                }
                return new GgufVocabulary("llama", "default", tokens, scores, types, null, 1, 2, 0, null, AddBos: true);
            }
            case Gpt2Tokenizer bpe:
            {
                string pre = PreTokenizers.FirstOrDefault(p => p.Pattern == bpe.PreTokenizerPattern).Pre
                    ?? throw new NotSupportedException($"pre-tokenizer regex {bpe.PreTokenizerPattern} has no llama.cpp tokenizer.ggml.pre name");
                int n = bpe.VocabSize;
                var tokens = new string[n];
                var types = new int[n];
                for (int i = 0; i < n; i++)
                {
                    tokens[i] = bpe.VocabularyEntry(i);
                    types[i] = bpe.AddedTokens.Values.Contains(i) ? SentencePieceModelProto.Control : SentencePieceModelProto.Normal;
                }
                return new GgufVocabulary("gpt2", pre, tokens, null, types, bpe.Merges.ToArray(), bpe.BosId, bpe.EosId, bpe.UnknownId, null, AddBos: false);
            }
            default:
                throw new NotSupportedException($"{tokenizer.GetType().Name} cannot be written as a GGUF vocabulary");
        }
    }

    /// <summary>Reads <c>tokenizer.ggml.*</c>.</summary>
    /// <exception cref="InputException">Missing or inconsistent entries, or a tokenizer model/pre not supported (named).</exception>
    public static GgufVocabulary Read(GgufFile file)
    {
        string model = GgufMetadata.String(file, P + "model");
        string? pre = file.Metadata.ContainsKey(P + "pre") ? GgufMetadata.String(file, P + "pre") : null;
        var tokens = GgufMetadata.Array<string>(file, P + "tokens", GgufType.String);
        int[] types = file.Metadata.ContainsKey(P + "token_type")
            ? GgufMetadata.Array<long>(file, P + "token_type", GgufType.Int32).Select(x => (int)x).ToArray()
            : Enumerable.Repeat(SentencePieceModelProto.Normal, tokens.Length).ToArray();
        float[]? scores = file.Metadata.ContainsKey(P + "scores")
            ? GgufMetadata.Array<double>(file, P + "scores", GgufType.Float32).Select(x => (float)x).ToArray() : null;
        string[]? merges = file.Metadata.ContainsKey(P + "merges") ? GgufMetadata.Array<string>(file, P + "merges", GgufType.String) : null;
        if (types.Length != tokens.Length) throw new InputException(file.SourcePath, $"{P}token_type has {types.Length} entries for {tokens.Length} tokens");
        if (scores is not null && scores.Length != tokens.Length) throw new InputException(file.SourcePath, $"{P}scores has {scores.Length} entries for {tokens.Length} tokens");
        int? Id(string key)
        {
            if (!file.Metadata.ContainsKey(P + key)) return null;
            long id = GgufMetadata.UInt(file, P + key);
            if (id >= tokens.Length) throw new InputException(file.SourcePath, $"{P}{key} {id} is outside the {tokens.Length} tokens");
            return (int)id;
        }
        return new GgufVocabulary(model, pre, tokens, scores, types, merges, Id("bos_token_id"), Id("eos_token_id"), Id("unknown_token_id"),
            Id("padding_token_id"), GgufMetadata.Bool(file, P + "add_bos_token", model == "llama"))
        {
            AddSpacePrefix = GgufMetadata.Bool(file, P + "add_space_prefix", true),
        };
    }

    /// <summary>The tokenizer this vocabulary describes; <paramref name="source"/> names the GGUF file in errors.</summary>
    /// <exception cref="InputException">A tokenizer model or pre-tokenizer not supported here (named), or an inconsistent vocabulary.</exception>
    public ITokenizer ToTokenizer(string source)
    {
        switch (Model)
        {
            case "llama":
            {
                if (Scores is null) throw new InputException(source, $"{P}scores is missing (needed by a SentencePiece vocabulary)");
                var pieces = Tokens.Select((t, i) => new SentencePiece(t, Scores[i], Types[i])).ToArray();
                bool byteFallback = Types.Contains(SentencePieceModelProto.Byte);
                var bytes = SentencePieceModelProto.Build(pieces, UnknownId ?? 0, BosId ?? -1, EosId ?? -1, PaddingId ?? -1, addDummyPrefix: AddSpacePrefix, byteFallback);
                return SentencePieceTokenizer.FromModelBytes(source, bytes);
            }
            case "gpt2":
            {
                string pre = Pre ?? "default";
                string pattern = pre == "default" ? Gpt2Tokenizer.Gpt2Pattern
                    : PreTokenizers.FirstOrDefault(p => p.Pre == pre).Pattern
                      ?? throw new InputException(source, $"{P}pre \"{pre}\" is not supported (supported: default, {string.Join(", ", PreTokenizers.Select(p => p.Pre))})");
                if (Merges is null) throw new InputException(source, $"{P}merges is missing (needed by a BPE vocabulary)");
                var vocab = new Dictionary<string, int>(Tokens.Length, StringComparer.Ordinal);
                var specials = new Dictionary<string, int>(StringComparer.Ordinal);
                for (int i = 0; i < Tokens.Length; i++)
                {
                    if (Types[i] is SentencePieceModelProto.Control or SentencePieceModelProto.UserDefined) specials[Tokens[i]] = i;
                    else if (!vocab.TryAdd(Tokens[i], i)) throw new InputException(source, $"{P}tokens: \"{Tokens[i]}\" appears twice");
                }
                var merges = Merges.Select((m, i) =>
                {
                    int space = m.IndexOf(' ');
                    if (space <= 0 || space == m.Length - 1) throw new InputException(source, $"{P}merges[{i}]: expected two tokens separated by a space, got \"{m}\"");
                    return (m[..space], m[(space + 1)..]);
                }).ToList();
                // llama.cpp sets ignore_merges for llama-bpe, as Llama 3's tokenizer.json does.
                return Gpt2Tokenizer.FromVocabulary(source, vocab, merges, specials, BosId, EosId, UnknownId, pattern, ignoreMerges: pre == "llama-bpe");
            }
            default:
                throw new InputException(source, $"{P}model \"{Model}\" is not supported (supported: llama, gpt2)");
        }
    }
}
