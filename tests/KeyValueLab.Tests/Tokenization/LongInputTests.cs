using System.Diagnostics;
using System.Text;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Tests.Tokenization;

/// <summary>
/// Long inputs: the llama2.c merge loop and the byte-level BPE of long pre-tokens are O(n log n). run.c's loop
/// took 5.6 s for 100 KB; Microsoft.ML.Tokenizers took 2.1 s (GPT-2) and 4.4 s (Llama 3, quadratic) for one
/// pre-token of 40,000 letters, measured here before the change. The time bounds are loose regression guards
/// (a quadratic path would need minutes); the equality tests are the oracle.
/// </summary>
public class LongInputTests
{
    private static string Letters(int n, int seed)
    {
        var rng = new Random(seed);
        return string.Create(n, rng, (span, r) => { for (int i = 0; i < span.Length; i++) span[i] = (char)('a' + r.Next(26)); });
    }

    private static double Seconds(Action work)
    {
        var watch = Stopwatch.StartNew();
        work();
        return watch.Elapsed.TotalSeconds;
    }

    public static TheoryData<string> Tokenizers => new() { "gpt2", "llama3", "qwen2", "llama2c" };

    private static ITokenizer Tokenizer(string name) => name switch
    {
        "gpt2" => TokenizerFixtures.Gpt2Files,
        "llama3" => TokenizerFixtures.Llama3Tiktoken,
        "qwen2" => TokenizerFixtures.Qwen2,
        _ => TokenizerFixtures.Llama2Bin,
    };

    [Theory]
    [MemberData(nameof(Tokenizers))]
    public void OneMegabyteWithoutSpacesEncodesInSeconds(string name)
    {
        var tok = Tokenizer(name);
        string text = Letters(1 << 20, 7);
        _ = tok.Encode(Letters(1000, 1));  // load lazily built tables outside the timing
        IReadOnlyList<int> ids = [];
        double seconds = Seconds(() => ids = tok.Encode(text));
        Assert.True(seconds < 30, $"{name}: {seconds:F1} s for 1 MiB of letters");
        Assert.Equal(text, tok.Decode(ids).TrimStart(' '));
        Assert.True(ids.Count > text.Length / 8, $"{ids.Count} tokens");
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama3")]
    [InlineData("qwen2")]
    public void LinearBpeEqualsTheLibraryOnPiecesItStillHandles(string name)
    {
        // Pre-tokens up to ByteLevelBpe.LongPiece characters still go through Microsoft.ML.Tokenizers: on 400 such
        // pieces (letters, accents, CJK, letters outside the BMP: one pre-token each) the O(n log n) merge gives the same ids.
        var tok = (Gpt2Tokenizer)Tokenizer(name);
        var idOf = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int id = 0; id < tok.VocabSize; id++)
            if (!tok.AddedTokens.Values.Contains(id)) idOf.TryAdd(tok.VocabularyEntry(id), id);
        var bpe = new ByteLevelBpe(t => idOf.TryGetValue(t, out int id) ? id : null, tok.Merges);
        var rng = new Random(11);
        string[] alphabets = ["abcdefghijklmnopqrstuvwxyz", "etaoinshrdlu", "aeiouéèêàçñöü", "的一是不了人我在有他这", "ab𝒜𝒷"];
        int checkedPieces = 0;
        for (int i = 0; i < 400; i++)
        {
            string alphabet = alphabets[i % alphabets.Length];
            var sb = new StringBuilder();
            int length = rng.Next(20, ByteLevelBpe.LongPiece / 2);  // long enough not to be one vocabulary entry (Llama 3's ignore_merges)
            var elements = System.Globalization.StringInfo.GetTextElementEnumerator(alphabet);
            var chars = new List<string>();
            while (elements.MoveNext()) chars.Add((string)elements.Current);
            for (int k = 0; k < length; k++) sb.Append(chars[rng.Next(chars.Count)]);
            string piece = sb.ToString();
            var library = tok.Encode(piece);
            if (piece.Length > ByteLevelBpe.LongPiece || library.Count == 0) continue;
            Assert.Equal(library, bpe.Encode(Encoding.UTF8.GetBytes(piece)));
            checkedPieces++;
        }
        Assert.True(checkedPieces > 300, $"only {checkedPieces} pieces compared");
    }
}
