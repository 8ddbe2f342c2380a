using KeyValueLab.Checkpoints;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;
using static KeyValueLab.Tokenization.SentencePieceModelProto;

namespace KeyValueLab.Tests.Gguf;

/// <summary>
/// Gemma's tokenizer.model is a SentencePiece BPE model with byte fallback, no dummy prefix and user-defined pieces
/// (<c>&lt;start_of_turn&gt;</c>, …) that are matched whole before BPE. No Gemma tokenizer is in the shared data, so a
/// small model of that shape is written here (our protobuf writer) and encoded by our SentencePiece path, by the
/// GGUF vocabulary made from it, and by llama.cpp on that GGUF; a few encodings are also worked out by hand.
/// </summary>
[Collection("llama.cpp")]
public class GemmaStyleSentencePieceTests : IDisposable
{
    private readonly TempDir _tmp = new();

    public void Dispose() => _tmp.Dispose();

    private static readonly string[] NormalPieces =
    [
        "▁", "a", "b", "d", "e", "h", "i", "l", "n", "o", "r", "s", "t", "u", "w", "!", "?", "1", "2", "3", "\n",
        "he", "ll", "hel", "hell", "hello", "▁w", "or", "▁wor", "▁worl", "▁world", "th", "▁th", "▁the", "in", "▁in",
        "!!", "!!!", "12", "123", "▁▁", "us", "er", "use", "user", "▁1",
    ];

    // Ids: 0 <pad>, 1 <eos>, 2 <bos>, 3 <unk>, 4 <start_of_turn>, 5 <end_of_turn>, 6..261 <0x00>..<0xFF>, then the normal pieces.
    private static SentencePieceTokenizer Build(out int firstNormal)
    {
        var pieces = new List<SentencePiece>
        {
            new("<pad>", 0, Control), new("<eos>", 0, Control), new("<bos>", 0, Control), new("<unk>", 0, Unknown),
            new("<start_of_turn>", 0, UserDefined), new("<end_of_turn>", 0, UserDefined),
        };
        for (int b = 0; b < 256; b++) pieces.Add(new($"<0x{b:X2}>", 0, SentencePieceModelProto.Byte));
        firstNormal = pieces.Count;
        for (int i = 0; i < NormalPieces.Length; i++) pieces.Add(new(NormalPieces[i], -i, Normal));
        var bytes = SentencePieceModelProto.Build(pieces, unkId: 3, bosId: 2, eosId: 1, padId: 0, addDummyPrefix: false, byteFallback: true);
        return SentencePieceTokenizer.FromModelBytes("gemma-style.model", bytes);
    }

    private static readonly string[] Texts =
    [
        "hello", "hello world", "<start_of_turn>user\nhello<end_of_turn>\n", "  hello", "hello!!!!!", "the 123 thin", "é🦙",
        "<start_of_turn><start_of_turn>", "a<end_of_turn>b", "<start_of_turn", "\t\n", "world", " the   world ", "1231231",
    ];

    [Fact]
    public void HandWorkedEncodings()
    {
        var tok = Build(out int n0);
        int Id(string piece) => n0 + Array.IndexOf(NormalPieces, piece);
        Assert.Equal([Id("hello")], tok.Encode("hello"));                                   // no dummy prefix
        Assert.Equal([4, Id("user"), Id("\n"), Id("hello"), 5], tok.Encode("<start_of_turn>user\nhello<end_of_turn>"));
        Assert.Equal([6 + 0xC3, 6 + 0xA9], tok.Encode("é"));                              // byte fallback
        Assert.Equal([Id("▁▁"), Id("hello")], tok.Encode("  hello"));
    }

    [Fact]
    public void OursThroughTheModelAndThroughGgufEqualLlamaCpp()
    {
        var tok = Build(out _);
        var config = Architectures.ParseConfig($$"""
            {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
             "num_attention_heads": 4, "vocab_size": {{tok.VocabSize}}, "max_position_embeddings": 128}
            """, "config.json");
        string gguf = _tmp.File("gemma-style-vocab.gguf");
        GgufWriter.Write(gguf, GgufExport.Metadata(config, tok), []);
        var fromGguf = Assert.IsType<SentencePieceTokenizer>(TokenizerLoader.Load(gguf));
        Assert.False(fromGguf.AddDummyPrefix);
        // llama.cpp retypes a user-defined "<end_of_turn>" as a control token ("control-looking token … will be
        // overridden", llama-vocab.cpp), so it is cut out of the text only when special tokens are parsed; SentencePiece
        // (and we) always match user-defined pieces. With special parsing on (no control token is in these texts) the
        // two agree; without it llama.cpp spells "<end_of_turn>" out, which is llama.cpp departing from SentencePiece.
        var cpp = LlamaCpp.Tokenize(gguf, Texts, parseSpecial: true);
        Assert.NotEqual(cpp[Array.IndexOf(Texts, "a<end_of_turn>b")], LlamaCpp.Tokenize(gguf, ["a<end_of_turn>b"])[0]);
        var mismatches = new List<string>();
        foreach (var (text, expected) in Texts.Zip(cpp))
        {
            var ours = tok.Encode(text);
            if (!ours.SequenceEqual(expected)) mismatches.Add($"{System.Text.Json.JsonSerializer.Serialize(text)}: ours [{string.Join(' ', ours)}], llama.cpp [{string.Join(' ', expected)}]");
            if (!fromGguf.Encode(text).SequenceEqual(ours)) mismatches.Add($"{System.Text.Json.JsonSerializer.Serialize(text)}: through GGUF");
        }
        Assert.True(mismatches.Count == 0, string.Join("\n", mismatches));
    }
}
