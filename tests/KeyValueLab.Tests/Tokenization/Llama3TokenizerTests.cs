using System.Text;
using System.Text.Json;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Tests.Tokenization;

/// <summary>
/// Llama 3 (tiktoken tokenizer.model and a tokenizer.json built from it) and Qwen2 byte-level BPE, checked against
/// llama.cpp's llama-bpe vectors (made upstream with Hugging Face tokenizers from Meta-Llama-3-8B).
/// </summary>
public class Llama3TokenizerTests
{
    public static TheoryData<int> VocabCaseIndices => new(Enumerable.Range(0, TokenizerFixtures.Llama3VocabCases.Count));

    private static readonly Lazy<(TempDir Dir, Gpt2Tokenizer Tok)> FromJson = new(BuildTokenizerJson);

    [Theory]
    [MemberData(nameof(VocabCaseIndices))]
    public void TiktokenModelMatchesLlamaCppFixture(int index)
    {
        var (text, ids) = TokenizerFixtures.Llama3VocabCases[index];
        Assert.Equal(ids, TokenizerFixtures.Llama3Tiktoken.Encode(text));
    }

    [Theory]
    [MemberData(nameof(VocabCaseIndices))]
    public void TokenizerJsonWithSplitMatchesLlamaCppFixture(int index)
    {
        var (text, ids) = TokenizerFixtures.Llama3VocabCases[index];
        Assert.Equal(ids, FromJson.Value.Tok.Encode(text));
    }

    [Fact]
    public void SpecialTokensSizesAndDecode()
    {
        foreach (var tok in new[] { TokenizerFixtures.Llama3Tiktoken, FromJson.Value.Tok })
        {
            Assert.Equal(128256, tok.VocabSize);
            Assert.Equal(128000, tok.BosId);
            Assert.Equal(128001, tok.EosId);
            Assert.Equal(new[] { 128000, 9906 }, tok.Encode("Hello", addBos: true));
            // Special tokens are cut out of the text wherever they occur (Meta layout: 128006/128007 header, 128009 eot).
            var ids = tok.Encode("<|start_header_id|>user<|end_header_id|>hi<|eot_id|>");
            Assert.Equal(128006, ids[0]);
            Assert.Equal(128007, ids[2]);
            Assert.Equal(128009, ids[^1]);
            Assert.Equal("<|reserved_special_token_250|>", tok.Decode([128255]));
            foreach (var (text, expected) in TokenizerFixtures.Llama3VocabCases)
                Assert.Equal(text, tok.Decode(expected));
        }
    }

    [Fact]
    public void CharactersOutsideTheBmpAreOneCodePointForTheRegex()
    {
        // Rust's regex and llama.cpp see "🦙" as one non-letter code point, so [^\r\n\p{L}\p{N}]?\p{L}+ takes it
        // together with the letters after it; a UTF-16 regex would split it off (see SplitPreTokenizer).
        var split = new SplitPreTokenizer(SplitPreTokenizer.Llama3Pattern, [], nfc: false);
        Assert.Equal(new[] { "a", "🦙b", " 𝐀𝐁", "😀😀" }, split.Split("a🦙b 𝐀𝐁😀😀").Select(p => p.Text));
    }

    [Fact]
    public void Qwen2LoadsAndRoundTripsText()
    {
        var tok = TokenizerFixtures.Qwen2;
        Assert.Equal(151646, tok.VocabSize);
        Assert.Null(tok.BosId);
        Assert.Equal(151643, tok.EosId);
        Assert.Equal(Gpt2Tokenizer.Qwen2Pattern, tok.PreTokenizerPattern);
        Assert.Equal(new[] { 151644, 872, 198 }, tok.Encode("<|im_start|>user\n"));
        // Qwen2 splits numbers into single digits.
        Assert.Equal(5, tok.Encode("12345").Count);
        foreach (var (text, _) in TokenizerFixtures.Llama3VocabCases)
            Assert.Equal(text, tok.Decode(tok.Encode(text)));
    }

    [Fact]
    public void Qwen2TokenizerJsonWithSplitEncodesAsVocabAndMerges()
    {
        // The tokenizer.json transformers writes for Qwen2 (NFC normalizer, Split with Qwen2's regex, ByteLevel),
        // built here from vocab.json + merges.txt; both paths must give the same ids on every test string.
        string folder = TestData.Path("qwen2_tokenizer");
        using var vocab = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(folder, "vocab.json")));
        var merges = File.ReadAllLines(Path.Combine(folder, "merges.txt")).Where(l => l.Length > 0 && !l.StartsWith("#version", StringComparison.Ordinal)).ToArray();
        var json = new
        {
            added_tokens = new[] { new { id = 151643, content = "<|endoftext|>" }, new { id = 151644, content = "<|im_start|>" }, new { id = 151645, content = "<|im_end|>" } },
            normalizer = new { type = "NFC" },
            pre_tokenizer = new
            {
                type = "Sequence",
                pretokenizers = new object[]
                {
                    new { type = "Split", pattern = new { Regex = Gpt2Tokenizer.Qwen2Pattern }, behavior = "Isolated", invert = false },
                    new { type = "ByteLevel", add_prefix_space = false, use_regex = false },
                },
            },
            model = new { type = "BPE", vocab = vocab.RootElement, merges },
        };
        using var dir = new TempDir();
        string path = dir.File("tokenizer.json");
        File.WriteAllBytes(path, JsonSerializer.SerializeToUtf8Bytes(json));
        var fromJson = Gpt2Tokenizer.FromTokenizerJson(path, null, "<|endoftext|>");
        string[] extra = ["<|im_start|>assistant\n2024-12-03<|im_end|>"];
        foreach (var text in TokenizerFixtures.Llama3VocabCases.Select(c => c.Text).Concat(extra))
            Assert.Equal(TokenizerFixtures.Qwen2.Encode(text), fromJson.Encode(text));
    }

    // ---- unsupported components: one line naming the component ----

    [Theory]
    [InlineData("""{"type": "Metaspace"}""", null, "pre_tokenizer Metaspace")]
    [InlineData("""{"type": "Sequence", "pretokenizers": [{"type": "Digits"}, {"type": "ByteLevel"}]}""", null, "pre_tokenizer Sequence [Digits, ByteLevel]")]
    [InlineData("""{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"String": " "}, "behavior": "Isolated"}, {"type": "ByteLevel", "use_regex": false}]}""", null, "only a {\"Regex\"")]
    [InlineData("""{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Removed"}, {"type": "ByteLevel", "use_regex": false}]}""", null, "Split behavior \"Removed\"")]
    [InlineData("""{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "a(?"}, "behavior": "Isolated"}, {"type": "ByteLevel", "use_regex": false}]}""", null, "pre-tokenizer regex")]
    [InlineData("""{"type": "ByteLevel"}""", """{"type": "NFKC"}""", "normalizer NFKC")]
    public void UnsupportedComponentsAreNamed(string preTokenizer, string? normalizer, string expected)
    {
        using var dir = new TempDir();
        string f = dir.File("tokenizer.json");
        const string model = """{"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}""";
        File.WriteAllText(f, "{\"normalizer\": " + (normalizer ?? "null") + ", \"pre_tokenizer\": " + preTokenizer + ", \"model\": " + model + "}");
        var e = Assert.Throws<InputException>(() => TokenizerLoader.Load(f));
        Assert.Equal(f, e.FilePath);
        Assert.Contains(expected, e.Problem);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void MalformedTiktokenLinesAreRefused()
    {
        using var dir = new TempDir();
        File.Copy(TestData.Path("llama3_tokenizer/tokenizer_config.json"), dir.File("tokenizer_config.json"));
        string f = dir.File("tokenizer.model");
        foreach (var (body, expected) in new[]
        {
            ("IQ== 0\nIg== 2\n", "rank 2 where 1 was expected"),
            ("IQ== 0\nI!g== 1\n", "line 2: \"I!g==\" is not base64"),
            ("IQ== 0\nIg== x\n", "line 2: rank \"x\""),
            ("IQ== 0\nIQ== 1\n", "line 2: token appears twice"),
        })
        {
            File.WriteAllText(f, body);
            var e = Assert.Throws<InputException>(() => TokenizerLoader.Load(f));
            Assert.Equal(f, e.FilePath);
            Assert.Contains(expected, e.Problem);
        }
    }

    /// <summary>
    /// A Hugging Face tokenizer.json made from Meta's tokenizer.model as transformers' TikTokenConverter does:
    /// vocabulary = every rank's bytes in GPT-2's byte-to-character spelling; merges = every split of a token into
    /// two tokens, ordered by the rank of the token they make; ignore_merges; the Llama 3 Split regex.
    /// </summary>
    private static (TempDir, Gpt2Tokenizer) BuildTokenizerJson()
    {
        var ranks = File.ReadAllLines(TestData.Path("llama3_tokenizer/tokenizer.model"))
            .Where(l => l.Length > 0).Select(l => Convert.FromBase64String(l.Split(' ')[0])).ToArray();
        var spell = ranks.Select(b => Gpt2Tokenizer.ByteLevel.ToChars(b)).ToArray();
        var rankOf = spell.Select((s, i) => (s, i)).ToDictionary(x => x.s, x => x.i, StringComparer.Ordinal);
        var merges = new List<(int Rank, int Left, string Pair)>();
        for (int r = 0; r < spell.Length; r++)
            for (int k = 1; k < spell[r].Length; k++)
                if (rankOf.TryGetValue(spell[r][..k], out int left) && rankOf.ContainsKey(spell[r][k..]))
                    merges.Add((r, left, spell[r][..k] + " " + spell[r][k..]));
        merges.Sort((a, b) => a.Rank != b.Rank ? a.Rank.CompareTo(b.Rank) : a.Left.CompareTo(b.Left));

        using var config = JsonDocument.Parse(File.ReadAllBytes(TestData.Path("llama3_tokenizer/tokenizer_config.json")));
        var added = config.RootElement.GetProperty("added_tokens_decoder").EnumerateObject()
            .Select(p => new { id = int.Parse(p.Name), content = p.Value.GetProperty("content").GetString(), special = true }).ToArray();
        var json = new
        {
            version = "1.0",
            added_tokens = added,
            normalizer = (object?)null,
            pre_tokenizer = new
            {
                type = "Sequence",
                pretokenizers = new object[]
                {
                    new { type = "Split", pattern = new { Regex = Gpt2Tokenizer.Llama3Pattern }, behavior = "Isolated", invert = false },
                    new { type = "ByteLevel", add_prefix_space = false, trim_offsets = true, use_regex = false },
                },
            },
            model = new
            {
                type = "BPE",
                ignore_merges = true,
                vocab = rankOf,
                merges = merges.Select(m => m.Pair).ToArray(),
            },
        };
        var dir = new TempDir();
        string path = dir.File("tokenizer.json");
        File.WriteAllBytes(path, JsonSerializer.SerializeToUtf8Bytes(json));
        return (dir, Gpt2Tokenizer.FromTokenizerJson(path, "<|begin_of_text|>", "<|end_of_text|>"));
    }
}
