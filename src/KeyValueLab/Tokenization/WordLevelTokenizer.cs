using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace KeyValueLab.Tokenization;

/// <summary>
/// A word-level vocabulary in Hugging Face's <c>tokenizer.json</c> form: <c>model.type</c> "WordLevel" with the
/// <c>Whitespace</c> pre-tokenizer (words <c>\w+</c> and runs of punctuation <c>[^\w\s]+</c>), one id per piece,
/// pieces outside the vocabulary → <c>unk_token</c>. Spaces are not tokens, so " Paris" and "Paris" are the same
/// single token (what a small synthetic-knowledge model wants). Decoding puts a space before each word, none
/// before punctuation or after an apostrophe; Hugging Face itself joins every piece with a space.
/// </summary>
public sealed partial class WordLevelTokenizer : ITokenizer
{
    private readonly Dictionary<string, int> _ids;
    private readonly string[] _tokens;

    /// <inheritdoc/>
    public int VocabSize => _tokens.Length;

    /// <inheritdoc/>
    public int? BosId { get; }

    /// <inheritdoc/>
    public int? EosId { get; }

    /// <summary>Id given to pieces outside the vocabulary.</summary>
    public int UnknownId { get; }

    /// <summary>The vocabulary in id order.</summary>
    public IReadOnlyList<string> Tokens => _tokens;

    // Hugging Face pre_tokenizers::whitespace::Whitespace.
    [GeneratedRegex(@"\w+|[^\w\s]+")]
    private static partial Regex PiecePattern();

    /// <summary>The pieces the Whitespace pre-tokenizer cuts <paramref name="text"/> into.</summary>
    public static IEnumerable<string> Split(string text) => PiecePattern().Matches(text).Select(m => m.Value);

    /// <summary>A tokenizer over <paramref name="tokens"/> (id = index; no duplicates).</summary>
    public WordLevelTokenizer(IReadOnlyList<string> tokens, string unknownToken, string? bosToken, string? eosToken)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        _tokens = [.. tokens];
        _ids = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < _tokens.Length; i++)
            if (!_ids.TryAdd(_tokens[i], i)) throw new ArgumentException($"token \"{_tokens[i]}\" appears twice", nameof(tokens));
        UnknownId = _ids.TryGetValue(unknownToken, out int unk) ? unk : throw new ArgumentException($"unknown token \"{unknownToken}\" is not in the vocabulary", nameof(unknownToken));
        BosId = bosToken is not null && _ids.TryGetValue(bosToken, out int bos) ? bos : null;
        EosId = eosToken is not null && _ids.TryGetValue(eosToken, out int eos) ? eos : null;
        _special = new HashSet<int>(new[] { UnknownId, BosId, EosId }.OfType<int>());
    }

    private readonly HashSet<int> _special;

    /// <summary>Whether <paramref name="path"/> is a <c>tokenizer.json</c> with a WordLevel model (false for anything else, readable or not).</summary>
    public static bool IsWordLevelJson(string path)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            return doc.RootElement.ValueKind == JsonValueKind.Object
                && doc.RootElement.TryGetProperty("model", out var m) && m.ValueKind == JsonValueKind.Object
                && m.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String && t.GetString() == "WordLevel";
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException) { return false; }
    }

    /// <summary>
    /// Loads a WordLevel <c>tokenizer.json</c>. <c>model.unk_token</c> names the unknown token; BOS and EOS are
    /// named by the caller (from <c>tokenizer_config.json</c>) and ignored when not in the vocabulary.
    /// </summary>
    /// <exception cref="InputException">Not JSON, not WordLevel, a pre-tokenizer other than Whitespace, or a malformed vocabulary.</exception>
    public static WordLevelTokenizer FromTokenizerJson(string path, string? bosToken, string? eosToken)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(Utf8Text.ReadBytes(path)); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new InputException(path, "cannot read: " + e.Message, e); }
        catch (JsonException e) { throw new InputException(path, "not valid JSON: " + e.Message, e); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object
                || !model.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String || type.GetString() != "WordLevel")
                throw new InputException(path, "not a WordLevel tokenizer.json (model.type must be \"WordLevel\")");
            if (root.TryGetProperty("normalizer", out var norm) && norm.ValueKind != JsonValueKind.Null)
                throw new InputException(path, "a normalizer is not supported for WordLevel tokenizers");
            string? pre = root.TryGetProperty("pre_tokenizer", out var p) && p.ValueKind == JsonValueKind.Object
                && p.TryGetProperty("type", out var pt) && pt.ValueKind == JsonValueKind.String ? pt.GetString() : null;
            if (pre != "Whitespace")
                throw new InputException(path, $"pre_tokenizer {pre ?? "none"} is not supported for WordLevel (supported: Whitespace)");
            if (!model.TryGetProperty("unk_token", out var unkJson) || unkJson.ValueKind != JsonValueKind.String)
                throw new InputException(path, "model.unk_token is missing");
            if (!model.TryGetProperty("vocab", out var vocab) || vocab.ValueKind != JsonValueKind.Object)
                throw new InputException(path, "model.vocab is missing or not an object");

            var byId = new SortedDictionary<int, string>();
            foreach (var entry in vocab.EnumerateObject())
            {
                if (entry.Value.ValueKind != JsonValueKind.Number || !entry.Value.TryGetInt32(out int id) || id < 0 || id > 16_000_000)
                    throw new InputException(path, $"model.vocab: token \"{entry.Name}\" has id {entry.Value.GetRawText()}, expected a non-negative integer");
                if (!byId.TryAdd(id, entry.Name)) throw new InputException(path, $"model.vocab: id {id} is given to both \"{byId[id]}\" and \"{entry.Name}\"");
            }
            if (byId.Count == 0 || byId.Keys.Last() != byId.Count - 1)
                throw new InputException(path, "model.vocab: ids must be exactly 0..n-1");
            string unk = unkJson.GetString()!;
            if (!byId.ContainsValue(unk)) throw new InputException(path, $"model.unk_token \"{unk}\" is not in the vocabulary");
            return new WordLevelTokenizer([.. byId.Values], unk, bosToken, eosToken);
        }
    }

    /// <summary>Writes the vocabulary as a Hugging Face <c>tokenizer.json</c> (the special tokens as added tokens).</summary>
    public string ToTokenizerJson()
    {
        var vocab = new JsonObject();
        for (int i = 0; i < _tokens.Length; i++) vocab[_tokens[i]] = i;
        var added = new JsonArray();
        foreach (int id in _special.Order())
            added.Add(new JsonObject
            {
                ["id"] = id, ["content"] = _tokens[id], ["single_word"] = false, ["lstrip"] = false,
                ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
            });
        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = added,
            ["normalizer"] = null,
            ["pre_tokenizer"] = new JsonObject { ["type"] = "Whitespace" },
            ["post_processor"] = null,
            ["decoder"] = null,
            ["model"] = new JsonObject { ["type"] = "WordLevel", ["vocab"] = vocab, ["unk_token"] = _tokens[UnknownId] },
        };
        var options = new JsonSerializerOptions { WriteIndented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping, NewLine = "\n" };
        return root.ToJsonString(options) + "\n";
    }

    /// <inheritdoc/>
    public IReadOnlyList<int> Encode(string text, bool addBos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>();
        if (addBos && BosId is int bos) ids.Add(bos);
        // Special tokens written in the text ("</s>") are recognised as themselves, as Hugging Face does for added tokens.
        foreach (var piece in SplitKeepingSpecials(text)) ids.Add(_ids.TryGetValue(piece, out int id) ? id : UnknownId);
        return ids;
    }

    private IEnumerable<string> SplitKeepingSpecials(string text)
    {
        int start = 0;
        while (start < text.Length)
        {
            int best = -1;
            string? found = null;
            foreach (int id in _special)
            {
                int at = text.IndexOf(_tokens[id], start, StringComparison.Ordinal);
                if (at >= 0 && (best < 0 || at < best)) (best, found) = (at, _tokens[id]);
            }
            int end = best < 0 ? text.Length : best;
            foreach (var piece in Split(text[start..end])) yield return piece;
            if (found is null) yield break;
            yield return found;
            start = best + found.Length;
        }
    }

    /// <inheritdoc/>
    public string Decode(IEnumerable<int> ids)
    {
        var sb = new StringBuilder();
        int previous = -1;
        foreach (int id in ids)
        {
            sb.Append(DecodeToken(previous, id));
            previous = id;
        }
        return sb.ToString();
    }

    /// <summary>The token, with a space in front when it is a word that follows another token (not BOS, not an apostrophe).</summary>
    public string DecodeToken(int previousId, int id)
    {
        string token = TokenText(id);
        if (id == BosId) return "";
        bool first = previousId < 0 || previousId == BosId || previousId >= _tokens.Length;
        bool word = token.Length > 0 && (char.IsLetterOrDigit(token[0]) || token[0] == '_' || _special.Contains(id));
        bool afterApostrophe = !first && _tokens[previousId] is "'";
        return first || !word || afterApostrophe ? token : " " + token;
    }

    /// <inheritdoc/>
    public byte[] DecodeTokenBytes(int previousId, int id) => Encoding.UTF8.GetBytes(DecodeToken(previousId, id));

    /// <inheritdoc/>
    public string TokenText(int id)
    {
        if ((uint)id >= (uint)_tokens.Length) throw new ArgumentOutOfRangeException(nameof(id), id, $"token id outside 0..{_tokens.Length - 1}");
        return _tokens[id];
    }
}
