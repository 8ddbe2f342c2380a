using System.Text;
using KeyValueLab.Checkpoints;
using KeyValueLab.Models;
using KeyValueLab.Tests.Gguf;

namespace KeyValueLab.Tests.Tokenization;

/// <summary>
/// The Llama 2 SentencePiece path against llama.cpp's SPM tokenizer on a large generated set of strings: runs of
/// repeated punctuation, mixed whitespace, digits, emoji, accents and CJK. llama.cpp reads a vocabulary GGUF that
/// our writer makes from Meta's tokenizer.model.
/// </summary>
[Collection("llama.cpp")]
public class SentencePieceAgreementTests
{
    private static readonly string[] Parts =
    [
        "!", "!!", "!!!!", "...", "..", "?", "???", "-", "--", "---", "==", "***", "#", "##", "()", "[]", "{", "}", "\"", "'", "''", ",", ";;", ":",
        " ", "  ", "   ", "    ", "\t", "\t\t", "\n", "\n\n", "\r\n", " \n ",
        "0", "1", "12", "123", "2024", "3.14", "1,000", "007",
        "a", "the", "The", "hello", "Hello", "HELLO", "world", "don't", "it's", "Once", "upon", "time",
        "🦙", "😀", "😀😀", "🚀🚀🚀", "👍🏽", "✅",
        "é", "café", "naïve", "Straße", "日本", "日本語", "한국어", "Привет", "ελληνικά", "\u00A0",
    ];

    /// <summary>Strings of 1 to 12 parts, reproducibly from a fixed seed.</summary>
    public static IReadOnlyList<string> Generated(int count, int seed)
    {
        var rng = new Random(seed);
        var list = new List<string>(count);
        for (int i = 0; i < count; i++)
        {
            var sb = new StringBuilder();
            int n = rng.Next(1, 13);
            for (int k = 0; k < n; k++) sb.Append(Parts[rng.Next(Parts.Length)]);
            list.Add(sb.ToString());
        }
        return list;
    }

    [Fact]
    public void Llama2TokenizerAgreesWithLlamaCppOnGeneratedStrings()
    {
        var tok = TokenizerFixtures.Llama2Model;
        var config = Architectures.ParseConfig("""
            {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
             "num_attention_heads": 4, "vocab_size": 32000, "max_position_embeddings": 128}
            """, "config.json");
        using var dir = new TempDir();
        string gguf = dir.File("llama2-vocab.gguf");
        GgufWriter.Write(gguf, GgufExport.Metadata(config, tok), []);

        var texts = Generated(3000, seed: 20261203);
        var cpp = LlamaCpp.Tokenize(gguf, texts);
        var mismatches = new List<string>();
        for (int i = 0; i < texts.Count; i++)
        {
            var ours = tok.Encode(texts[i]);
            if (!ours.SequenceEqual(cpp[i]))
                mismatches.Add($"{System.Text.Json.JsonSerializer.Serialize(texts[i])}: ours [{string.Join(' ', ours)}] llama.cpp [{string.Join(' ', cpp[i])}]");
        }
        Assert.True(mismatches.Count == 0, $"{mismatches.Count} of {texts.Count} differ:\n" + string.Join("\n", mismatches.Take(25)));
    }
}
