using System.Text;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Tests.Tokenization;

public class TokenizerLoaderTests
{
    [Fact]
    public void LoadsEachKindFromFolderAndFile()
    {
        Assert.IsType<Gpt2Tokenizer>(TokenizerLoader.Load(TestData.Path("gpt2_tokenizer")));
        Assert.IsType<Gpt2Tokenizer>(TokenizerLoader.Load(TestData.Path("gpt2_tokenizer/tokenizer.json")));
        Assert.IsType<Gpt2Tokenizer>(TokenizerLoader.Load(TestData.Path("gpt2_tokenizer/vocab.json")));
        Assert.IsType<Gpt2Tokenizer>(TokenizerLoader.Load(TestData.Path("hf_fixtures/tiny_gpt2_lm_buddy/merges.txt")));
        Assert.IsType<SentencePieceTokenizer>(TokenizerLoader.Load(TestData.Path("llama2_tokenizer")));
        Assert.IsType<SentencePieceTokenizer>(TokenizerLoader.Load(TestData.Path("llama2_tokenizer/tokenizer.model")));
        Assert.IsType<Llama2cTokenizer>(TokenizerLoader.Load(TestData.Path("llama2_tokenizer/tokenizer.bin")));
        Assert.IsType<Llama2cTokenizer>(TokenizerLoader.Load(TestData.Path("llama2c_stories260K/tok512.bin")));
    }

    [Fact]
    public void FolderWithTokenizerBinLoadsLlama2c()
    {
        using var dir = new TempDir();
        File.Copy(TestData.Path("llama2c_stories260K/tok512.bin"), dir.File("tokenizer.bin"));
        Assert.Equal(512, TokenizerLoader.Load(dir.Path).VocabSize);
    }

    [Fact]
    public void SentencePieceStyleTokenizerJsonGivesWayToTokenizerModel()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("tokenizer.json"),
            """{"normalizer": {"type": "Replace"}, "pre_tokenizer": null, "model": {"type": "BPE", "byte_fallback": true, "vocab": {}, "merges": []}}""");
        File.Copy(TestData.Path("llama2_tokenizer/tokenizer.model"), dir.File("tokenizer.model"));
        Assert.IsType<SentencePieceTokenizer>(TokenizerLoader.Load(dir.Path));
    }

    // ---- malformed input: one-line InputException naming the file, never a crash or hang ----

    private static InputException Fails(string pathToLoad, string expectedFile, string messagePart)
    {
        var e = Assert.Throws<InputException>(() => TokenizerLoader.Load(pathToLoad));
        Assert.Equal(expectedFile, e.FilePath);
        Assert.StartsWith(expectedFile + ": ", e.Message);
        Assert.Contains(messagePart, e.Problem);
        Assert.DoesNotContain('\n', e.Message);
        return e;
    }

    [Fact]
    public void InvalidUtf8InTokenizerFilesIsNamedNotReplaced()
    {
        // System.Text.Json reads invalid UTF-8 inside a string without complaint and throws InvalidOperationException
        // (exit 1) when the string is taken; File.ReadAllLines replaces it silently. Both are input errors here.
        using var dir = new TempDir();
        foreach (var f in new[] { "vocab.json", "merges.txt" }) File.Copy(TestData.Path("hf_fixtures/tiny_gpt2_lm_buddy/" + f), dir.File(f));
        var config = Encoding.UTF8.GetBytes("{\"bos_token\": \"<s").Concat(new byte[] { 0xFF, 0xFE }).Concat(Encoding.UTF8.GetBytes(">\"}")).ToArray();
        File.WriteAllBytes(dir.File("tokenizer_config.json"), config);
        var e = Fails(dir.Path, dir.File("tokenizer_config.json"), "not valid UTF-8");
        Assert.Contains("byte 0xFF at offset 17", e.Problem);
        File.Delete(dir.File("tokenizer_config.json"));

        var merges = File.ReadAllBytes(dir.File("merges.txt"));
        File.WriteAllBytes(dir.File("merges.txt"), [.. merges, 0xC3, (byte)' ', (byte)'a', (byte)'\n']);
        Fails(dir.Path, dir.File("merges.txt"), "not valid UTF-8");
    }

    [Fact]
    public void TokenizerWithMoreIdsThanTheModelEmbedsIsRefusedNamingBoth()
    {
        // Llama 2's 32,000 pieces for stories260K's 512 embedding rows: any id past 511 would fail inside libtorch.
        string model = TestData.Path("llama2c_stories260K/stories260K.bin"), tok = TestData.Path("llama2_tokenizer/tokenizer.model");
        var e = Assert.Throws<InputException>(() => TokenizerLoader.ForModel(model, tok, "unused", modelVocabSize: 512));
        Assert.Equal(tok, e.FilePath);
        Assert.Contains("ids up to 31999", e.Problem);
        Assert.Contains(model, e.Problem);
        Assert.DoesNotContain('\n', e.Message);
        Assert.Equal(32000, TokenizerLoader.ForModel(model, tok, "unused", modelVocabSize: 32000).VocabSize);
    }

    private static byte[] Prefix(string relative, int length) => File.ReadAllBytes(TestData.Path(relative))[..length];

    [Fact]
    public void TruncatedTokenizerBin()
    {
        using var dir = new TempDir();
        string f = dir.File("tokenizer.bin");
        File.WriteAllBytes(f, Prefix("llama2c_stories260K/tok512.bin", 1001));
        Fails(f, f, "truncated inside token");
        File.WriteAllBytes(f, Prefix("llama2c_stories260K/tok512.bin", 2));
        Fails(f, f, "truncated");
    }

    [Fact]
    public void TokenizerBinWithTooFewTokensForTheCheckpoint()
    {
        string f = TestData.Path("llama2c_stories260K/tok512.bin");
        var e = Assert.Throws<InputException>(() => Llama2cTokenizer.FromFile(f, vocabSize: 32000));
        Assert.Equal(f + ": has 512 tokens but 32000 are needed", e.Message);
    }

    [Fact]
    public void GarbageTokenizerBin()
    {
        using var dir = new TempDir();
        string f = dir.File("tokenizer.bin");
        File.WriteAllBytes(f, Encoding.ASCII.GetBytes("this is not a tokenizer at all, just text"));
        Fails(f, f, "max_token_length");
        // A plausible header but a token longer than max_token_length.
        var bytes = new List<byte>(BitConverter.GetBytes(3));
        bytes.AddRange(BitConverter.GetBytes(0f));
        bytes.AddRange(BitConverter.GetBytes(1_000_000));
        File.WriteAllBytes(f, bytes.ToArray());
        Fails(f, f, "token 0 has length 1000000");
    }

    [Fact]
    public void TokenizerJsonThatIsNotJson()
    {
        using var dir = new TempDir();
        string f = dir.File("tokenizer.json");
        File.WriteAllBytes(f, Prefix("gpt2_tokenizer/tokenizer.json", 5000));
        Fails(dir.Path, f, "not valid JSON");
        File.WriteAllText(f, "[1, 2, 3]");
        Fails(f, f, "expected a JSON object");
    }

    [Fact]
    public void TokenizerJsonWithUnknownModelType()
    {
        using var dir = new TempDir();
        string f = dir.File("tokenizer.json");
        File.WriteAllText(f, """{"model": {"type": "WordPiece", "vocab": {"a": 0}}}""");
        Fails(f, f, "model type \"WordPiece\" is not supported");
        File.WriteAllText(f, """{"model": {"vocab": ["a", 0.0]}}""");
        Fails(f, f, "not a BPE model");
        File.WriteAllText(f, """{"version": "1.0"}""");
        Fails(f, f, "no \"model\" object");
    }

    [Fact]
    public void VocabAndMergesThatDoNotBelongTogether()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("vocab.json"), """{"a": 0, "b": 1, "ab": 2}""");
        File.WriteAllText(dir.File("merges.txt"), "#version: 0.2\na b\nab c\n");
        Fails(dir.Path, dir.File("merges.txt"), "line 3: merge \"ab c\" uses \"c\", which is not in the vocabulary");
        // A merge whose result the vocabulary lacks (a token renamed by hand) is refused, as Hugging Face does.
        File.WriteAllText(dir.File("vocab.json"), """{"a": 0, "b": 1, "ab": 2, "c": 3}""");
        Fails(dir.Path, dir.File("merges.txt"), "line 3: merge \"ab c\" makes \"abc\", which is not in the vocabulary");
        File.WriteAllText(dir.File("vocab.json"), """{"a": 0, "b": 1, "ab": 2}""");
        File.WriteAllText(dir.File("merges.txt"), "#version: 0.2\na b c\n");
        Fails(dir.Path, dir.File("merges.txt"), "line 2: expected two tokens");
        // The real GPT-2 merges against the toy vocabulary.
        File.Copy(TestData.Path("gpt2_tokenizer/merges.txt"), dir.File("merges.txt"), overwrite: true);
        Fails(dir.Path, dir.File("merges.txt"), "do not belong together");
    }

    [Fact]
    public void MalformedVocabJson()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("merges.txt"), "#version: 0.2\n");
        File.WriteAllText(dir.File("vocab.json"), """{"a": 0, "b": "one"}""");
        Fails(dir.Path, dir.File("vocab.json"), "token \"b\" has id \"one\"");
        File.WriteAllText(dir.File("vocab.json"), """{"a": 0, "b": 0}""");
        Fails(dir.Path, dir.File("vocab.json"), "id 0 is given to both");
        File.WriteAllText(dir.File("vocab.json"), """{"a": 0, "b": 2147483647}""");
        Fails(dir.Path, dir.File("vocab.json"), "expected an integer");
    }

    [Fact]
    public void GarbageTokenizerModel()
    {
        using var dir = new TempDir();
        string f = dir.File("tokenizer.model");
        var random = new Random(1234);
        var garbage = new byte[4096];
        random.NextBytes(garbage);
        File.WriteAllBytes(f, garbage);
        Fails(dir.Path, f, "not a SentencePiece BPE model");
        File.WriteAllBytes(f, Prefix("llama2_tokenizer/tokenizer.model", 100_000));
        Fails(f, f, "not a SentencePiece BPE model");
        File.WriteAllBytes(f, []);
        Fails(f, f, "empty file");
    }

    [Fact]
    public void MissingFiles()
    {
        using var dir = new TempDir();
        Fails(dir.Path, dir.Path, "no tokenizer found");
        Fails(dir.File("nope.model"), dir.File("nope.model"), "no such file");
        File.Copy(TestData.Path("hf_fixtures/tiny_gpt2_lm_buddy/vocab.json"), dir.File("vocab.json"));
        Fails(dir.Path, dir.File("merges.txt"), "missing");
        Fails(dir.File("vocab.json"), dir.File("merges.txt"), "missing");
        File.WriteAllText(dir.File("weights.safetensors"), "x");
        Fails(dir.File("weights.safetensors"), dir.File("weights.safetensors"), "unknown tokenizer file type");
    }

    [Fact]
    public void MalformedTokenizerConfig()
    {
        using var dir = new TempDir();
        foreach (var name in new[] { "vocab.json", "merges.txt" })
            File.Copy(TestData.Path("hf_fixtures/tiny_gpt2_lm_buddy/" + name), dir.File(name));
        File.WriteAllText(dir.File("tokenizer_config.json"), "{\"bos_token\": ");
        Fails(dir.Path, dir.File("tokenizer_config.json"), "not valid JSON");
    }
}
