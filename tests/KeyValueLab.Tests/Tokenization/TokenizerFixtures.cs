using System.Text.Json;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Tests.Tokenization;

/// <summary>Tokenizers and fixture files shared by the tokenizer tests, loaded once per test run.</summary>
internal static class TokenizerFixtures
{
    public static string Gpt2Folder => TestData.Path("gpt2_tokenizer");

    private static readonly Lazy<Gpt2Tokenizer> Gpt2FromFiles = new(() =>
        Gpt2Tokenizer.FromFiles(Path.Combine(Gpt2Folder, "vocab.json"), Path.Combine(Gpt2Folder, "merges.txt")));
    private static readonly Lazy<Gpt2Tokenizer> Gpt2FromJson = new(() =>
        Gpt2Tokenizer.FromTokenizerJson(Path.Combine(Gpt2Folder, "tokenizer.json")));
    private static readonly Lazy<SentencePieceTokenizer> LlamaModel = new(() =>
        SentencePieceTokenizer.FromFile(TestData.Path("llama2_tokenizer/tokenizer.model")));
    private static readonly Lazy<Llama2cTokenizer> LlamaBin = new(() =>
        Llama2cTokenizer.FromFile(TestData.Path("llama2_tokenizer/tokenizer.bin")));
    private static readonly Lazy<Llama2cTokenizer> Tok512Bin = new(() =>
        Llama2cTokenizer.FromFile(TestData.Path("llama2c_stories260K/tok512.bin")));

    /// <summary>GPT-2 from vocab.json + merges.txt.</summary>
    public static Gpt2Tokenizer Gpt2Files => Gpt2FromFiles.Value;

    /// <summary>GPT-2 from tokenizer.json.</summary>
    public static Gpt2Tokenizer Gpt2Json => Gpt2FromJson.Value;

    /// <summary>Llama 2 tokenizer.model.</summary>
    public static SentencePieceTokenizer Llama2Model => LlamaModel.Value;

    /// <summary>Llama 2 vocabulary exported to llama2.c tokenizer.bin.</summary>
    public static Llama2cTokenizer Llama2Bin => LlamaBin.Value;

    /// <summary>stories260K's 512-token llama2.c tokenizer.</summary>
    public static Llama2cTokenizer Tok512 => Tok512Bin.Value;

    /// <summary>llama.cpp test-tokenizer-0 cases for GPT-2: (text, expected ids), in file order.</summary>
    public static IReadOnlyList<(string Text, int[] Ids)> Gpt2VocabCases => Gpt2Cases.Value;

    /// <summary>llama.cpp test-tokenizer-0 cases for Llama 3 (llama-bpe): (text, expected ids), in file order.</summary>
    public static IReadOnlyList<(string Text, int[] Ids)> Llama3VocabCases => Llama3Cases.Value;

    private static readonly Lazy<IReadOnlyList<(string, int[])>> Gpt2Cases = new(() => VocabCases("ggml-vocab-gpt-2.gguf"));
    private static readonly Lazy<IReadOnlyList<(string, int[])>> Llama3Cases = new(() => VocabCases("ggml-vocab-llama-bpe.gguf"));

    /// <summary>Meta's Llama 3 tokenizer.model (tiktoken format) with its tokenizer_config.json.</summary>
    public static Gpt2Tokenizer Llama3Tiktoken => Llama3Model.Value;

    private static readonly Lazy<Gpt2Tokenizer> Llama3Model = new(() =>
        (Gpt2Tokenizer)TokenizerLoader.Load(TestData.Path("llama3_tokenizer/tokenizer.model")));

    /// <summary>Qwen2 vocab.json + merges.txt + tokenizer_config.json.</summary>
    public static Gpt2Tokenizer Qwen2 => Qwen2Files.Value;

    private static readonly Lazy<Gpt2Tokenizer> Qwen2Files = new(() => (Gpt2Tokenizer)TokenizerLoader.Load(TestData.Path("qwen2_tokenizer")));

    private static IReadOnlyList<(string, int[])> VocabCases(string name)
    {
        const string separator = "\n__ggml_vocab_test__\n";
        string inp = File.ReadAllText(TestData.Path($"llamacpp_vocab_fixtures/{name}.inp"));
        string[] outLines = File.ReadAllText(TestData.Path($"llamacpp_vocab_fixtures/{name}.out")).Split('\n');
        // Every input, the last one included, is followed by the separator; the .out file has one line per input.
        Assert.EndsWith(separator, inp);
        string[] texts = inp[..^separator.Length].Split(separator);
        Assert.Equal(texts.Length + 1, outLines.Length);
        Assert.Equal("", outLines[^1]);
        return texts.Select((t, i) => (t, outLines[i].Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray())).ToList();
    }

    /// <summary>Cases of a llama2.c-style encode fixture: text, bos flag, ids.</summary>
    public static IReadOnlyList<(string Text, bool Bos, int[] Ids)> EncodeCases(string relativePath)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(TestData.Path(relativePath)));
        var root = doc.RootElement.ValueKind == JsonValueKind.Array ? doc.RootElement : doc.RootElement.GetProperty("cases");
        return root.EnumerateArray().Select(c => (
            c.GetProperty("text").GetString()!,
            c.GetProperty("bos").GetBoolean(),
            c.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray())).ToList();
    }
}
