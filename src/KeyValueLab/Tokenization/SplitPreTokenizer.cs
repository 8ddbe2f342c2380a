using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace KeyValueLab.Tokenization;

/// <summary>
/// The text-splitting half of a byte-level BPE tokenizer, as Hugging Face tokenizers runs it: added (special)
/// tokens are cut out of the raw text first, the rest is optionally NFC-normalised and split by a regex into
/// pieces (matches and the gaps between them, the <c>Split</c> pre-tokenizer's "Isolated" behaviour); each piece is
/// then encoded on its own.
/// </summary>
/// <remarks>
/// .NET's <see cref="Regex"/> sees UTF-16 code units, while Rust's regex (Hugging Face) and llama.cpp see code
/// points: a character outside the BMP is two surrogates, neither of which is <c>\p{L}</c> or <c>\p{N}</c>, and a
/// one-character class such as Llama 3's <c>[^\r\n\p{L}\p{N}]?</c> can take the second surrogate alone
/// ("a🦙b" would split as "a", "🦙", "b" instead of "a", "🦙b"). The regex therefore runs on a copy of the text in
/// which each such character is replaced by one BMP character of the same Unicode category, and the pieces are cut
/// from the original text.
/// </remarks>
internal sealed class SplitPreTokenizer
{
    /// <summary>openai/gpt-2 encoder.py; Hugging Face's ByteLevel pre-tokenizer with use_regex=true uses the same pattern.</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    /// <summary>Meta's llama/tokenizer.py (Llama 3) pattern; also in Llama 3's tokenizer.json Split pre-tokenizer.</summary>
    public const string Llama3Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>Hugging Face Qwen2Tokenizer's pattern: Llama 3's with single digits.</summary>
    public const string Qwen2Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    private static readonly char[] Representative = BuildRepresentatives();

    private readonly Regex _pattern;
    private readonly Regex? _specials;
    private readonly bool _nfc;

    /// <summary>The regex source, as given.</summary>
    public string Pattern { get; }

    /// <exception cref="ArgumentException">The pattern is not a valid .NET regex.</exception>
    public SplitPreTokenizer(string pattern, IEnumerable<string> specialTokens, bool nfc)
    {
        Pattern = pattern;
        _pattern = new Regex(pattern, RegexOptions.CultureInvariant | RegexOptions.Compiled);
        // Longest first, so "<|a|>x" is not cut as "<|a|>" when "<|a|>x" is itself a token.
        var specials = specialTokens.Where(s => s.Length > 0).Distinct().OrderByDescending(s => s.Length).ThenBy(s => s, StringComparer.Ordinal).ToList();
        _specials = specials.Count == 0 ? null : new Regex(string.Join("|", specials.Select(Regex.Escape)), RegexOptions.CultureInvariant);
        _nfc = nfc;
    }

    /// <summary>The pieces of <paramref name="text"/>, in order; <c>Special</c> marks an added token's exact text.</summary>
    public IEnumerable<(string Text, bool Special)> Split(string text)
    {
        int at = 0;
        if (_specials is not null)
        {
            foreach (Match m in _specials.Matches(text))
            {
                foreach (var piece in SplitOrdinary(text[at..m.Index])) yield return (piece, false);
                yield return (m.Value, true);
                at = m.Index + m.Length;
            }
        }
        foreach (var piece in SplitOrdinary(text[at..])) yield return (piece, false);
    }

    private IEnumerable<string> SplitOrdinary(string text)
    {
        if (text.Length == 0) yield break;
        // Note: with InvariantGlobalization (this repository's default) .NET has no ICU and Normalize leaves
        // non-ASCII text unchanged, so NFC (Qwen2) takes effect only where globalization is enabled.
        if (_nfc) text = text.Normalize(NormalizationForm.FormC);

        // One BMP stand-in per surrogate pair; start[i] is where stand-in character i begins in the text.
        var sb = new StringBuilder(text.Length);
        var start = new List<int>(text.Length + 1);
        for (int i = 0; i < text.Length; i++)
        {
            start.Add(i);
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                sb.Append(Representative[(int)CharUnicodeInfo.GetUnicodeCategory(text, i)]);
                i++;
            }
            else sb.Append(text[i]);
        }
        start.Add(text.Length);

        int previous = 0;
        foreach (Match m in _pattern.Matches(sb.ToString()))
        {
            if (m.Length == 0) continue;
            if (m.Index > previous) yield return text[start[previous]..start[m.Index]];
            yield return text[start[m.Index]..start[m.Index + m.Length]];
            previous = m.Index + m.Length;
        }
        if (previous < sb.Length) yield return text[start[previous]..];
    }

    // For each Unicode category, a non-ASCII BMP character of that category that is not whitespace (so the
    // regex's literal ASCII letters, \s, \r and \n never match a stand-in unless the original would).
    private static char[] BuildRepresentatives()
    {
        int count = Enum.GetValues<UnicodeCategory>().Length;
        var map = new char[count];
        for (int c = 0xFFFD; c >= 0x80; c--)
        {
            char ch = (char)c;
            if (char.IsSurrogate(ch) || char.IsWhiteSpace(ch)) continue;
            map[(int)CharUnicodeInfo.GetUnicodeCategory(ch)] = ch;
        }
        for (int i = 0; i < count; i++)
            if (map[i] == '\0') map[i] = '\uFFFD';  // categories with no such BMP character: count as a symbol
        return map;
    }
}
