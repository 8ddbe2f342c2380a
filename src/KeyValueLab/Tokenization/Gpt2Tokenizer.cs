using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace KeyValueLab.Tokenization;

/// <summary>
/// GPT-2 byte-level BPE (the GPT-2 / GPT-J vocabulary and others built the same way): GPT-2's pre-tokenisation regex,
/// bytes mapped to printable characters, then the ranked merges. Encoding is done by Microsoft.ML.Tokenizers'
/// <see cref="BpeTokenizer"/>, which gives Hugging Face's ids exactly; added tokens such as <c>&lt;|endoftext|&gt;</c>
/// are recognised in the text, as Hugging Face does.
/// </summary>
public sealed partial class Gpt2Tokenizer : ITokenizer
{
    /// <summary>The default special token of GPT-2 (id 50256), its BOS, EOS and unknown token.</summary>
    public const string EndOfText = "<|endoftext|>";

    private readonly BpeTokenizer _bpe;
    private readonly byte[][] _tokenBytes;   // [id] → the bytes the token stands for (empty for unused ids)

    /// <inheritdoc/>
    public int VocabSize => _tokenBytes.Length;

    /// <inheritdoc/>
    public int? BosId { get; }

    /// <inheritdoc/>
    public int? EosId { get; }

    /// <summary>Id emitted for bytes the vocabulary cannot spell, or null (such bytes are then dropped, as Hugging Face does).</summary>
    public int? UnknownId { get; }

    // openai/gpt-2 encoder.py; HF ByteLevel pre-tokenizer with use_regex=true uses the same pattern.
    [GeneratedRegex(@"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")]
    private static partial Regex PreTokenPattern();

    /// <summary>
    /// Loads <c>vocab.json</c> + <c>merges.txt</c>. Special tokens default to Hugging Face's GPT2Tokenizer
    /// (all three <see cref="EndOfText"/>); a token not in the vocabulary is ignored.
    /// </summary>
    /// <exception cref="InputException">A file is missing, malformed, or the two files do not belong together.</exception>
    public static Gpt2Tokenizer FromFiles(string vocabPath, string mergesPath,
        string? bosToken = EndOfText, string? eosToken = EndOfText, string? unknownToken = EndOfText)
    {
        var vocab = ReadVocabJson(vocabPath);
        var merges = ReadMergesTxt(mergesPath);
        var specials = new Dictionary<string, int>();
        foreach (var s in new[] { bosToken, eosToken, unknownToken })
            if (s is not null && vocab.TryGetValue(s, out int id)) specials[s] = id;
        return new Gpt2Tokenizer(vocabPath, mergesPath, vocab, merges, specials, bosToken, eosToken, unknownToken);
    }

    /// <summary>
    /// Loads a Hugging Face <c>tokenizer.json</c> whose model is BPE with the byte-level pre-tokenizer
    /// (<c>model.type</c> "BPE", or absent as in older files). Special tokens are named as in
    /// <see cref="FromFiles"/>; <c>model.unk_token</c> wins over <paramref name="unknownToken"/>.
    /// </summary>
    /// <exception cref="InputException">The file is missing, not JSON, or describes another kind of tokenizer.</exception>
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
            throw new InputException(path, $"model type \"{type}\" is not supported here (supported: BPE with the ByteLevel pre-tokenizer)");

        CheckByteLevel(path, root);
        foreach (var (name, bad) in new[] { ("continuing_subword_prefix", ""), ("end_of_word_suffix", "") })
            if (model.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String && v.GetString() != bad)
                throw new InputException(path, $"model.{name} is set; only GPT-2 style byte-level BPE is supported");
        if (model.TryGetProperty("byte_fallback", out var bf) && bf.ValueKind == JsonValueKind.True)
            throw new InputException(path, "model.byte_fallback is set (SentencePiece-style BPE); use tokenizer.model instead");
        if (model.TryGetProperty("ignore_merges", out var im) && im.ValueKind == JsonValueKind.True)
            throw new InputException(path, "model.ignore_merges is set (Llama 3 style); not supported");
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

        var specials = new Dictionary<string, int>();
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
                specials[c.GetString()!] = id;
            }
        }
        foreach (var s in new[] { bosToken, eosToken, unknownToken })
            if (s is not null && !specials.ContainsKey(s) && vocab.TryGetValue(s, out int id)) specials[s] = id;
        return new Gpt2Tokenizer(path, path, vocab, merges, specials, bosToken, eosToken, unknownToken);
    }

    private Gpt2Tokenizer(string vocabSource, string mergesSource, Dictionary<string, int> vocab, List<Merge> merges,
        Dictionary<string, int> specials, string? bosToken, string? eosToken, string? unknownToken)
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

        int size = Math.Max(vocab.Count == 0 ? 0 : vocab.Values.Max() + 1, specials.Count == 0 ? 0 : specials.Values.Max() + 1);
        _tokenBytes = new byte[size][];
        Array.Fill(_tokenBytes, Array.Empty<byte>());
        foreach (var (token, id) in vocab) _tokenBytes[id] = ByteLevel.ToBytes(token);
        foreach (var (token, id) in specials) _tokenBytes[id] = Encoding.UTF8.GetBytes(token);

        int? Find(string? s) => s is not null && specials.TryGetValue(s, out int id) ? id : null;
        BosId = Find(bosToken);
        EosId = Find(eosToken);
        UnknownId = Find(unknownToken);

        var options = new BpeOptions(vocab)
        {
            Merges = usable,
            ByteLevel = true,
            PreTokenizer = new RegexPreTokenizer(PreTokenPattern(), specials.Count > 0 ? specials : null),
            SpecialTokens = specials.Count > 0 ? specials : null,
            UnknownToken = UnknownId is null ? null : unknownToken,
        };
        try { _bpe = BpeTokenizer.Create(options); }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or KeyNotFoundException)
        {
            throw new InputException(mergesSource, "cannot build the BPE tokenizer: " + e.Message, e);
        }
    }

    /// <inheritdoc/>
    public IReadOnlyList<int> Encode(string text, bool addBos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = _bpe.EncodeToIds(text);
        if (!addBos || BosId is not int bos) return ids;
        var withBos = new List<int>(ids.Count + 1) { bos };
        withBos.AddRange(ids);
        return withBos;
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
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new InputException(path, "cannot read: " + e.Message, e); }
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
        string[] lines;
        try { lines = File.ReadAllLines(path, Encoding.UTF8); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new InputException(path, "cannot read: " + e.Message, e); }
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

    private static void CheckByteLevel(string path, JsonElement root)
    {
        if (root.TryGetProperty("normalizer", out var norm) && norm.ValueKind != JsonValueKind.Null)
            throw new InputException(path, $"normalizer {TypeOf(norm)} is not supported (GPT-2 style tokenizers have none)");
        if (!root.TryGetProperty("pre_tokenizer", out var pre) || pre.ValueKind != JsonValueKind.Object || TypeOf(pre) != "ByteLevel")
            throw new InputException(path, $"pre_tokenizer {(pre.ValueKind == JsonValueKind.Object ? TypeOf(pre) : "none")} is not supported (supported: ByteLevel)");
        if (pre.TryGetProperty("add_prefix_space", out var aps) && aps.ValueKind == JsonValueKind.True)
            throw new InputException(path, "pre_tokenizer ByteLevel with add_prefix_space=true is not supported");
        if (pre.TryGetProperty("use_regex", out var ur) && ur.ValueKind == JsonValueKind.False)
            throw new InputException(path, "pre_tokenizer ByteLevel with use_regex=false is not supported");
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
