using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace KeyValueLab.Tokenization;

/// <summary>
/// Byte-level BPE as GPT-2 introduced it and Llama 3, Qwen2 and GPT-J use: added tokens cut out of the text, a
/// regex pre-tokenizer (GPT-2's, or the file's <c>Split</c> pattern), bytes mapped to printable characters, then the
/// ranked merges. Merges are applied by Microsoft.ML.Tokenizers' <see cref="BpeTokenizer"/>, which gives Hugging
/// Face's ids exactly, or, for Meta's tiktoken-format <c>tokenizer.model</c>, by its <see cref="TiktokenTokenizer"/>.
/// </summary>
public sealed partial class Gpt2Tokenizer : ITokenizer
{
    /// <summary>The default special token of GPT-2 (id 50256), its BOS, EOS and unknown token.</summary>
    public const string EndOfText = "<|endoftext|>";

    private readonly SplitPreTokenizer _split;
    private readonly Func<string, IReadOnlyList<int>> _encodePiece;
    private readonly Dictionary<string, int> _specials;
    private readonly byte[][] _tokenBytes;   // [id] → the bytes the token stands for (empty for unused ids)
    private readonly Func<IReadOnlyList<string>> _merges;
    private readonly bool _ignoreMerges;

    /// <inheritdoc/>
    public int VocabSize => _tokenBytes.Length;

    /// <inheritdoc/>
    public int? BosId { get; }

    /// <inheritdoc/>
    public int? EosId { get; }

    /// <summary>Id emitted for bytes the vocabulary cannot spell, or null (such bytes are then dropped, as Hugging Face does).</summary>
    public int? UnknownId { get; }

    /// <summary>The pre-tokenizer regex in use.</summary>
    public string PreTokenizerPattern => _split.Pattern;

    // The whole piece as one pre-token: splitting is done by SplitPreTokenizer before the merges run.
    [GeneratedRegex(@"[\s\S]+")]
    private static partial Regex WholePiece();

    /// <summary>
    /// Loads <c>vocab.json</c> + <c>merges.txt</c>. Special tokens default to Hugging Face's GPT2Tokenizer
    /// (all three <see cref="EndOfText"/>); a token not in the vocabulary is ignored. <paramref name="pattern"/> is the
    /// pre-tokenizer regex (Qwen2Tokenizer: <see cref="Qwen2Pattern"/> with <paramref name="nfc"/>);
    /// <paramref name="addedTokens"/> (content → id, e.g. from <c>added_tokens_decoder</c>) are cut out of the text.
    /// </summary>
    /// <exception cref="InputException">A file is missing, malformed, or the two files do not belong together.</exception>
    public static Gpt2Tokenizer FromFiles(string vocabPath, string mergesPath,
        string? bosToken = EndOfText, string? eosToken = EndOfText, string? unknownToken = EndOfText,
        string pattern = Gpt2Pattern, bool nfc = false, IReadOnlyDictionary<string, int>? addedTokens = null)
    {
        var vocab = ReadVocabJson(vocabPath);
        var merges = ReadMergesTxt(mergesPath);
        var specials = new Dictionary<string, int>(addedTokens ?? new Dictionary<string, int>(), StringComparer.Ordinal);
        foreach (var s in new[] { bosToken, eosToken, unknownToken })
            if (s is not null && !specials.ContainsKey(s) && vocab.TryGetValue(s, out int id)) specials[s] = id;
        return FromBpe(vocabPath, mergesPath, vocab, merges, specials, bosToken, eosToken, unknownToken, pattern, nfc, ignoreMerges: false);
    }

    /// <summary>GPT-2's pre-tokenizer regex (also Hugging Face's ByteLevel pre-tokenizer with use_regex=true).</summary>
    public const string Gpt2Pattern = SplitPreTokenizer.Gpt2Pattern;

    /// <summary>Llama 3's pre-tokenizer regex (Meta's llama/tokenizer.py).</summary>
    public const string Llama3Pattern = SplitPreTokenizer.Llama3Pattern;

    /// <summary>Qwen2's pre-tokenizer regex (Hugging Face Qwen2Tokenizer).</summary>
    public const string Qwen2Pattern = SplitPreTokenizer.Qwen2Pattern;

    /// <summary>
    /// Loads a Hugging Face <c>tokenizer.json</c> whose model is byte-level BPE (<c>model.type</c> "BPE", or absent as
    /// in older files): pre-tokenizer ByteLevel (GPT-2's regex) or a Sequence of a regex <c>Split</c> (Isolated)
    /// and ByteLevel without its regex (Llama 3, Qwen2); normalizer none or NFC; <c>ignore_merges</c> honoured.
    /// Special tokens are named as in <see cref="FromFiles"/>; <c>model.unk_token</c> wins over <paramref name="unknownToken"/>.
    /// </summary>
    /// <exception cref="InputException">The file is missing, not JSON, or uses a component not supported here (named).</exception>
    public static Gpt2Tokenizer FromTokenizerJson(string path,
        string? bosToken = EndOfText, string? eosToken = EndOfText, string? unknownToken = EndOfText)
    {
        using var doc = ParseJson(path);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object) throw new InputException(path, "expected a JSON object (Hugging Face tokenizer.json)");
        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            throw new InputException(path, "no \"model\" object; not a Hugging Face tokenizer.json");

        string? type = model.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
        if (type is null && !(model.TryGetProperty("vocab", out _) && model.TryGetProperty("merges", out _)))
            throw new InputException(path, "model has no \"type\" and is not a BPE model (no vocab and merges)");
        if (type is not null && type != "BPE")
            throw new InputException(path, $"model type \"{type}\" is not supported here (supported: byte-level BPE)");

        bool nfc = ReadNormalizer(path, root);
        string pattern = ReadPreTokenizer(path, root);
        foreach (var (name, bad) in new[] { ("continuing_subword_prefix", ""), ("end_of_word_suffix", "") })
            if (model.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String && v.GetString() != bad)
                throw new InputException(path, $"model.{name} is set; only GPT-2 style byte-level BPE is supported");
        if (model.TryGetProperty("byte_fallback", out var bf) && bf.ValueKind == JsonValueKind.True)
            throw new InputException(path, "model.byte_fallback is set (SentencePiece-style BPE); use tokenizer.model instead");
        if (model.TryGetProperty("dropout", out var dr) && dr.ValueKind == JsonValueKind.Number && dr.GetDouble() != 0)
            throw new InputException(path, "model.dropout is set (BPE dropout); not supported");
        bool ignoreMerges = model.TryGetProperty("ignore_merges", out var im) && im.ValueKind == JsonValueKind.True;
        if (model.TryGetProperty("unk_token", out var unk) && unk.ValueKind == JsonValueKind.String) unknownToken = unk.GetString();

        if (!model.TryGetProperty("vocab", out var vocabJson)) throw new InputException(path, "model.vocab is missing");
        var vocab = ReadVocab(path, vocabJson, "model.vocab");

        if (!model.TryGetProperty("merges", out var mergesJson) || mergesJson.ValueKind != JsonValueKind.Array)
            throw new InputException(path, "model.merges is missing or not an array");
        var merges = new List<Merge>();
        int i = 0;
        foreach (var m in mergesJson.EnumerateArray())
        {
            string where = $"model.merges[{i++}]";
            if (m.ValueKind == JsonValueKind.String) merges.Add(SplitMerge(path, m.GetString()!, where));
            else if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2
                     && m[0].ValueKind == JsonValueKind.String && m[1].ValueKind == JsonValueKind.String)
                merges.Add(new Merge(m[0].GetString()!, m[1].GetString()!, where));
            else throw new InputException(path, $"{where}: expected \"a b\" or [\"a\", \"b\"]");
        }

        var specials = new Dictionary<string, int>(StringComparer.Ordinal);
        if (root.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
        {
            i = 0;
            foreach (var a in added.EnumerateArray())
            {
                string where = $"added_tokens[{i++}]";
                if (a.ValueKind != JsonValueKind.Object
                    || !a.TryGetProperty("id", out var idJson) || idJson.ValueKind != JsonValueKind.Number
                    || !idJson.TryGetInt32(out int id) || id < 0 || id > MaxId
                    || !a.TryGetProperty("content", out var c) || c.ValueKind != JsonValueKind.String || c.GetString()!.Length == 0)
                    throw new InputException(path, $"{where}: expected {{\"id\": non-negative int, \"content\": non-empty string, ...}}");
                foreach (var flag in new[] { "lstrip", "rstrip", "single_word" })
                    if (a.TryGetProperty(flag, out var f) && f.ValueKind == JsonValueKind.True)
                        throw new InputException(path, $"{where}: added token with {flag}=true is not supported");
                specials[c.GetString()!] = id;
            }
        }
        foreach (var s in new[] { bosToken, eosToken, unknownToken })
            if (s is not null && !specials.ContainsKey(s) && vocab.TryGetValue(s, out int id)) specials[s] = id;
        return FromBpe(path, path, vocab, merges, specials, bosToken, eosToken, unknownToken, pattern, nfc, ignoreMerges);
    }

    /// <summary>
    /// Byte-level BPE from a vocabulary (byte-level strings → id) and merges already read, e.g. from GGUF metadata.
    /// </summary>
    internal static Gpt2Tokenizer FromVocabulary(string source, Dictionary<string, int> vocab, IEnumerable<(string Left, string Right)> merges,
        Dictionary<string, int> specials, int? bosId, int? eosId, int? unknownId, string pattern, bool ignoreMerges)
    {
        var list = merges.Select((m, i) => new Merge(m.Left, m.Right, $"merges[{i}]")).ToList();
        string? Name(int? id) => id is int x ? specials.FirstOrDefault(p => p.Value == x).Key ?? vocab.FirstOrDefault(p => p.Value == x).Key : null;
        string? bos = Name(bosId), eos = Name(eosId), unk = Name(unknownId);
        foreach (var s in new[] { bos, eos, unk })
            if (s is not null && !specials.ContainsKey(s) && vocab.TryGetValue(s, out int id)) specials[s] = id;
        return FromBpe(source, source, vocab, list, specials, bos, eos, unk, pattern, nfc: false, ignoreMerges);
    }

    /// <summary>
    /// Loads Meta's tiktoken-format <c>tokenizer.model</c> (Llama 3): one "base64(token bytes) rank" per line, rank =
    /// id. <paramref name="specialTokens"/> (content → id, Llama 3: the 256 of <c>added_tokens_decoder</c>) follow.
    /// </summary>
    /// <exception cref="InputException">The file is malformed, or a special token's id collides with a rank.</exception>
    public static Gpt2Tokenizer FromTiktoken(string path, IReadOnlyDictionary<string, int> specialTokens,
        string? bosToken, string? eosToken, string pattern = Llama3Pattern)
    {
        ArgumentNullException.ThrowIfNull(specialTokens);
        var ranks = TiktokenFile.Read(path);
        var specials = new Dictionary<string, int>(specialTokens, StringComparer.Ordinal);
        foreach (var (token, id) in specials)
            if (id < ranks.Length)
                throw new InputException(path, $"special token \"{token}\" has id {id}, which is already the rank of a token here (0..{ranks.Length - 1})");
        TiktokenTokenizer tiktoken;
        try
        {
            using var stream = File.OpenRead(path);
            tiktoken = TiktokenTokenizer.Create(stream, new RegexPreTokenizer(WholePiece(), null), normalizer: null, specialTokens: null);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or ArgumentException or InvalidOperationException)
        {
            throw new InputException(path, "cannot build the tiktoken tokenizer: " + e.Message, e);
        }
        var spelled = new Lazy<Dictionary<string, int>>(() =>
        {
            var d = new Dictionary<string, int>(ranks.Length, StringComparer.Ordinal);
            for (int i = 0; i < ranks.Length; i++) d.TryAdd(ByteLevel.ToChars(ranks[i]), i);
            return d;
        });
        var merges = new Lazy<IReadOnlyList<string>>(() => MergesFromRanks(ranks));
        var longBpe = new Lazy<ByteLevelBpe>(() => new ByteLevelBpe(t => spelled.Value.TryGetValue(t, out int id) ? id : null, merges.Value));
        return new Gpt2Tokenizer(path, ranks, specials, bosToken, eosToken, null, pattern, nfc: false,
            LongPiecesLinear(piece => tiktoken.EncodeToIds(piece), longBpe), () => merges.Value, ignoreMerges: true);
    }

    private static Gpt2Tokenizer FromBpe(string vocabSource, string mergesSource, Dictionary<string, int> vocab, List<Merge> merges,
        Dictionary<string, int> specials, string? bosToken, string? eosToken, string? unknownToken, string pattern, bool nfc, bool ignoreMerges)
    {
        // A merge of tokens the vocabulary lacks, or one whose result it lacks, means the merges belong to another
        // vocabulary (or the vocabulary was edited by hand). Hugging Face's tokenizers refuses both
        // (MergeTokenOutOfVocabulary); skipping such a merge would silently tokenise differently from the original.
        var usable = new List<string>(merges.Count);
        foreach (var m in merges)
        {
            foreach (var part in new[] { m.Left, m.Right, m.Left + m.Right })
                if (!vocab.ContainsKey(part))
                    throw new InputException(mergesSource,
                        $"{m.Where}: merge \"{m.Left} {m.Right}\" {(part == m.Left + m.Right ? "makes" : "uses")} \"{part}\", which is not in the vocabulary ({Path.GetFileName(vocabSource)}); the vocabulary and merges do not belong together");
            usable.Add(m.Left + " " + m.Right);
        }

        int size = vocab.Count == 0 ? 0 : vocab.Values.Max() + 1;
        var tokenBytes = new byte[size][];
        Array.Fill(tokenBytes, Array.Empty<byte>());
        foreach (var (token, id) in vocab) tokenBytes[id] = ByteLevel.ToBytes(token);

        string? unknown = unknownToken is not null && (specials.ContainsKey(unknownToken) || vocab.ContainsKey(unknownToken)) ? unknownToken : null;
        var options = new BpeOptions(vocab)
        {
            Merges = usable,
            ByteLevel = true,
            PreTokenizer = new RegexPreTokenizer(WholePiece(), null),
            // The library looks the unknown token up in the vocabulary; one that is only an added token cannot be used there.
            UnknownToken = unknown is not null && vocab.ContainsKey(unknown) ? unknown : null,
        };
        BpeTokenizer bpe;
        try { bpe = BpeTokenizer.Create(options); }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or KeyNotFoundException)
        {
            throw new InputException(mergesSource, "cannot build the BPE tokenizer: " + e.Message, e);
        }
        // ignore_merges (Llama 3): a piece that is itself in the vocabulary is that token, whatever the merges would make.
        var longBpe = new Lazy<ByteLevelBpe>(() => new ByteLevelBpe(t => vocab.TryGetValue(t, out int id) ? id : null, usable));
        Func<string, IReadOnlyList<int>> library = piece => bpe.EncodeToIds(piece);
        Func<string, IReadOnlyList<int>> encode = ignoreMerges
            ? piece => vocab.TryGetValue(ByteLevel.ToChars(piece), out int id) ? [id] : LongPiecesLinear(library, longBpe)(piece)
            : LongPiecesLinear(library, longBpe);
        return new Gpt2Tokenizer(mergesSource, tokenBytes, specials, bosToken, eosToken, unknown, pattern, nfc, encode, () => usable, ignoreMerges);
    }

    /// <summary>Pre-tokens longer than <see cref="ByteLevelBpe.LongPiece"/> characters through <see cref="ByteLevelBpe"/>, the rest through the library.</summary>
    private static Func<string, IReadOnlyList<int>> LongPiecesLinear(Func<string, IReadOnlyList<int>> library, Lazy<ByteLevelBpe> longBpe) =>
        piece => piece.Length > ByteLevelBpe.LongPiece && longBpe.Value.Encode(Encoding.UTF8.GetBytes(piece)) is { } ids ? ids : library(piece);

    /// <summary>
    /// BPE merges equivalent to tiktoken ranks (as transformers' TikTokenConverter makes them): every split of a
    /// token into two tokens, ordered by the rank of the token made, then of its left part.
    /// </summary>
    internal static IReadOnlyList<string> MergesFromRanks(byte[][] ranks)
    {
        var spell = ranks.Select(b => ByteLevel.ToChars(b)).ToArray();
        var rankOf = new Dictionary<string, int>(spell.Length, StringComparer.Ordinal);
        for (int i = 0; i < spell.Length; i++) rankOf.TryAdd(spell[i], i);
        var merges = new List<(int Rank, int Left, string Pair)>();
        for (int r = 0; r < spell.Length; r++)
            for (int k = 1; k < spell[r].Length; k++)
                if (rankOf.TryGetValue(spell[r][..k], out int left) && rankOf.ContainsKey(spell[r][k..]))
                    merges.Add((r, left, spell[r][..k] + " " + spell[r][k..]));
        merges.Sort((a, b) => a.Rank != b.Rank ? a.Rank.CompareTo(b.Rank) : a.Left.CompareTo(b.Left));
        return merges.Select(m => m.Pair).ToArray();
    }

    /// <summary>The merges, "left right" in priority order (derived from the ranks for a tiktoken file).</summary>
    internal IReadOnlyList<string> Merges => _merges();

    /// <summary>Whether a piece found whole in the vocabulary skips the merges (Llama 3).</summary>
    internal bool IgnoresMerges => _ignoreMerges;

    /// <summary>The added tokens (content → id), cut out of the text before pre-tokenisation.</summary>
    internal IReadOnlyDictionary<string, int> AddedTokens => _specials;

    /// <summary>A token as the vocabulary spells it: byte-level characters, or an added token's text.</summary>
    internal string VocabularyEntry(int id) =>
        _specials.FirstOrDefault(p => p.Value == id).Key ?? ByteLevel.ToChars(Bytes(id));

    private Gpt2Tokenizer(string source, byte[][] tokenBytes, Dictionary<string, int> specials,
        string? bosToken, string? eosToken, string? unknownToken, string pattern, bool nfc, Func<string, IReadOnlyList<int>> encodePiece,
        Func<IReadOnlyList<string>> merges, bool ignoreMerges)
    {
        _merges = merges;
        _ignoreMerges = ignoreMerges;
        int size = Math.Max(tokenBytes.Length, specials.Count == 0 ? 0 : specials.Values.Max() + 1);
        _tokenBytes = new byte[size][];
        Array.Fill(_tokenBytes, Array.Empty<byte>());
        Array.Copy(tokenBytes, _tokenBytes, tokenBytes.Length);
        foreach (var (token, id) in specials) _tokenBytes[id] = Encoding.UTF8.GetBytes(token);
        _specials = specials;

        int? Find(string? s) => s is not null && specials.TryGetValue(s, out int id) ? id : null;
        BosId = Find(bosToken);
        EosId = Find(eosToken);
        UnknownId = Find(unknownToken);
        try { _split = new SplitPreTokenizer(pattern, specials.Keys, nfc); }
        catch (ArgumentException e) { throw new InputException(source, "pre-tokenizer regex is not supported by .NET's Regex: " + e.Message, e); }
        _encodePiece = encodePiece;
    }

    /// <inheritdoc/>
    public IReadOnlyList<int> Encode(string text, bool addBos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>();
        if (addBos && BosId is int bos) ids.Add(bos);
        foreach (var (piece, special) in _split.Split(text))
        {
            if (special) ids.Add(_specials[piece]);
            else ids.AddRange(_encodePiece(piece));
        }
        return ids;
    }

    /// <inheritdoc/>
    public string Decode(IEnumerable<int> ids)
    {
        var bytes = new List<byte>();
        foreach (int id in ids) bytes.AddRange(Bytes(id));
        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    /// <summary>The token's text; GPT-2 has no dummy prefix, so <paramref name="previousId"/> does not matter.</summary>
    public string DecodeToken(int previousId, int id) => TokenBytes.ToText(Bytes(id));

    /// <inheritdoc/>
    public byte[] DecodeTokenBytes(int previousId, int id) => (byte[])Bytes(id).Clone();

    /// <inheritdoc/>
    public string TokenText(int id) => TokenBytes.ToDisplay(Bytes(id));

    private byte[] Bytes(int id)
    {
        if ((uint)id >= (uint)_tokenBytes.Length) throw new ArgumentOutOfRangeException(nameof(id), id, $"token id outside 0..{_tokenBytes.Length - 1}");
        return _tokenBytes[id];
    }

    private readonly record struct Merge(string Left, string Right, string Where);

    private static JsonDocument ParseJson(string path)
    {
        byte[] bytes = Utf8Text.ReadBytes(path);
        try { return JsonDocument.Parse(bytes, new JsonDocumentOptions { MaxDepth = 64 }); }
        catch (JsonException e) { throw new InputException(path, "not valid JSON: " + e.Message, e); }
    }

    private static Dictionary<string, int> ReadVocabJson(string path)
    {
        using var doc = ParseJson(path);
        return ReadVocab(path, doc.RootElement, "vocabulary");
    }

    // Hard limit on ids so a corrupt file cannot make us allocate gigabytes.
    private const int MaxId = 16_000_000;

    private static Dictionary<string, int> ReadVocab(string path, JsonElement json, string what)
    {
        if (json.ValueKind != JsonValueKind.Object) throw new InputException(path, $"{what}: expected a JSON object mapping token → id");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        var owner = new Dictionary<int, string>();
        foreach (var p in json.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetInt32(out int id) || id < 0 || id > MaxId)
                throw new InputException(path, $"{what}: token \"{p.Name}\" has id {p.Value.GetRawText()}, expected an integer in 0..{MaxId}");
            if (owner.TryGetValue(id, out var other))
                throw new InputException(path, $"{what}: id {id} is given to both \"{other}\" and \"{p.Name}\"");
            if (!vocab.TryAdd(p.Name, id)) throw new InputException(path, $"{what}: token \"{p.Name}\" appears twice");
            owner[id] = p.Name;
        }
        if (vocab.Count == 0) throw new InputException(path, $"{what} is empty");
        return vocab;
    }

    private static List<Merge> ReadMergesTxt(string path)
    {
        string[] lines = Utf8Text.ReadLines(path);
        var merges = new List<Merge>(lines.Length);
        for (int i = 0; i < lines.Length; i++)
        {
            string line = lines[i];
            if (line.Length == 0 || (i == 0 && line.StartsWith("#version", StringComparison.Ordinal))) continue;
            merges.Add(SplitMerge(path, line, $"line {i + 1}"));
        }
        return merges;
    }

    private static Merge SplitMerge(string path, string text, string where)
    {
        int space = text.IndexOf(' ');
        if (space <= 0 || space == text.Length - 1 || text.IndexOf(' ', space + 1) >= 0)
            throw new InputException(path, $"{where}: expected two tokens separated by one space, got \"{text}\"");
        return new Merge(text[..space], text[(space + 1)..], where);
    }

    /// <summary>True for an NFC normalizer, false for none; anything else is refused, named.</summary>
    private static bool ReadNormalizer(string path, JsonElement root)
    {
        if (!root.TryGetProperty("normalizer", out var norm) || norm.ValueKind == JsonValueKind.Null) return false;
        if (TypeOf(norm) == "NFC") return true;
        throw new InputException(path, $"normalizer {TypeOf(norm)} is not supported (supported: none, NFC)");
    }

    /// <summary>
    /// The regex of the pre-tokenizer: ByteLevel with use_regex (GPT-2's), or Sequence [Split (Regex, Isolated,
    /// not inverted), ByteLevel without regex]. Anything else is refused with the component named.
    /// </summary>
    private static string ReadPreTokenizer(string path, JsonElement root)
    {
        if (!root.TryGetProperty("pre_tokenizer", out var pre) || pre.ValueKind != JsonValueKind.Object)
            throw new InputException(path, "pre_tokenizer none is not supported (supported: ByteLevel, or Sequence of Split and ByteLevel)");
        switch (TypeOf(pre))
        {
            case "ByteLevel":
                CheckByteLevel(path, pre, useRegex: true);
                return Gpt2Pattern;
            case "Sequence":
                if (!pre.TryGetProperty("pretokenizers", out var steps) || steps.ValueKind != JsonValueKind.Array)
                    throw new InputException(path, "pre_tokenizer Sequence has no \"pretokenizers\" array");
                var types = steps.EnumerateArray().Select(TypeOf).ToArray();
                if (types.Length != 2 || types[0] != "Split" || types[1] != "ByteLevel")
                    throw new InputException(path, $"pre_tokenizer Sequence [{string.Join(", ", types)}] is not supported (supported: [Split, ByteLevel])");
                CheckByteLevel(path, steps[1], useRegex: false);
                var split = steps[0];
                if (!split.TryGetProperty("pattern", out var p) || p.ValueKind != JsonValueKind.Object
                    || !p.TryGetProperty("Regex", out var regex) || regex.ValueKind != JsonValueKind.String)
                    throw new InputException(path, "pre_tokenizer Split: only a {\"Regex\": ...} pattern is supported");
                string behavior = split.TryGetProperty("behavior", out var b) && b.ValueKind == JsonValueKind.String ? b.GetString()! : "";
                if (behavior != "Isolated")
                    throw new InputException(path, $"pre_tokenizer Split behavior \"{behavior}\" is not supported (supported: Isolated)");
                if (split.TryGetProperty("invert", out var inv) && inv.ValueKind == JsonValueKind.True)
                    throw new InputException(path, "pre_tokenizer Split with invert=true is not supported");
                return regex.GetString()!;
            default:
                throw new InputException(path, $"pre_tokenizer {TypeOf(pre)} is not supported (supported: ByteLevel, or Sequence of Split and ByteLevel)");
        }
    }

    private static void CheckByteLevel(string path, JsonElement pre, bool useRegex)
    {
        if (pre.TryGetProperty("add_prefix_space", out var aps) && aps.ValueKind == JsonValueKind.True)
            throw new InputException(path, "pre_tokenizer ByteLevel with add_prefix_space=true is not supported");
        bool regex = !pre.TryGetProperty("use_regex", out var ur) || ur.ValueKind != JsonValueKind.False;
        if (regex != useRegex)
            throw new InputException(path, useRegex
                ? "pre_tokenizer ByteLevel with use_regex=false is not supported on its own (no split at all)"
                : "pre_tokenizer ByteLevel after Split must have use_regex=false");
    }

    private static string TypeOf(JsonElement e) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()! : e.ValueKind.ToString();

    /// <summary>GPT-2's reversible byte ↔ printable-character map (openai/gpt-2 encoder.py <c>bytes_to_unicode</c>).</summary>
    internal static class ByteLevel
    {
        private static readonly char[] ByteToChar = BuildByteToChar();
        private static readonly Dictionary<char, byte> CharToByte =
            Enumerable.Range(0, 256).ToDictionary(b => ByteToChar[b], b => (byte)b);

        private static char[] BuildByteToChar()
        {
            // Printable Latin-1 bytes map to themselves; the other 68 take the code points from 256 upwards, in byte order.
            var map = new char[256];
            int next = 256;
            for (int b = 0; b < 256; b++)
            {
                bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
                map[b] = printable ? (char)b : (char)next++;
            }
            return map;
        }

        /// <summary>The vocabulary spelling of raw text: its UTF-8 bytes, each as its printable character.</summary>
        public static string ToChars(string text)
        {
            var bytes = Encoding.UTF8.GetBytes(text);
            var chars = new char[bytes.Length];
            for (int i = 0; i < bytes.Length; i++) chars[i] = ByteToChar[bytes[i]];
            return new string(chars);
        }

        /// <summary>The vocabulary spelling of raw bytes.</summary>
        public static string ToChars(ReadOnlySpan<byte> bytes)
        {
            var chars = new char[bytes.Length];
            for (int i = 0; i < bytes.Length; i++) chars[i] = ByteToChar[bytes[i]];
            return new string(chars);
        }

        /// <summary>The bytes a vocabulary entry stands for; characters outside the map (added tokens) as UTF-8.</summary>
        public static byte[] ToBytes(string token)
        {
            var bytes = new List<byte>(token.Length);
            Span<byte> buf = stackalloc byte[4];
            foreach (var r in token.EnumerateRunes())
            {
                if (r.IsBmp && CharToByte.TryGetValue((char)r.Value, out byte b)) bytes.Add(b);
                else
                {
                    int n = r.EncodeToUtf8(buf);
                    for (int i = 0; i < n; i++) bytes.Add(buf[i]);
                }
            }
            return bytes.ToArray();
        }
    }
}
